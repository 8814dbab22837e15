package tools

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// Every answer fits the byte budget (tools.answer_budget_bytes), the
// envelope included. Lists give way by whole items; a record too large
// on its own keeps its shape and has its longest text values cut, each
// ending in cutMark and named in the record's _cut_fields, so that a cut
// record is never presented as whole.

// cutMark ends a text value that was cut.
const cutMark = "…"

// minCut is the shortest text worth cutting.
const minCut = 16

// fitRecord cuts the longest text values of rec, in {value, display}
// pairs too, until its encoding fits budget, naming each field cut in
// _cut_fields. When cutting text is not enough, whole fields are left
// out, largest first, and named in _left_out_fields; sys_id and number
// stay. It reports whether rec was changed.
func fitRecord(rec map[string]any, budget int) bool {
	b, _ := marshal(rec)
	if len(b) <= budget {
		return false
	}
	cut := map[string]bool{}
	for len(b) > budget {
		field, sub, s := longestText(rec)
		if len(s) <= minCut {
			break
		}
		// The slack pays for the cut mark and the _cut_fields entry.
		keep := cutEncoded(s, len(b)-budget+32+len(field))
		if sub == "" {
			rec[field] = keep + cutMark
		} else {
			rec[field].(map[string]any)[sub] = keep + cutMark
		}
		cut[field] = true
		rec["_cut_fields"] = sortedFieldNames(cut)
		b, _ = marshal(rec)
	}

	var left []string
	for len(b) > budget {
		field := largestField(rec)
		if field == "" {
			break
		}
		delete(rec, field)
		delete(cut, field)
		left = append(left, field)
		sort.Strings(left)
		rec["_left_out_fields"] = left
		if len(cut) > 0 {
			rec["_cut_fields"] = sortedFieldNames(cut)
		} else {
			delete(rec, "_cut_fields")
		}
		b, _ = marshal(rec)
	}
	return true
}

// cutEncoded drops characters from the end of s until what they took in
// JSON (escapes included) is at least n bytes.
func cutEncoded(s string, n int) string {
	end := len(s)
	for end > 0 && n > 0 {
		r, size := utf8.DecodeLastRuneInString(s[:end])
		end -= size
		switch {
		case r == '"' || r == '\\' || r == '\n' || r == '\r' || r == '\t':
			n -= 2
		case r < 0x20 || r == '\u2028' || r == '\u2029' || r == utf8.RuneError && size == 1:
			n -= 6
		default:
			n -= size
		}
	}
	return s[:end]
}

// longestText finds the longest text of rec that may be cut: a field's
// string value, or a string inside its {value, display} pair (sub names
// it). The server's own _ fields and sys_id are never cut.
func longestText(rec map[string]any) (field, sub, text string) {
	for _, name := range sortedFieldNames(rec) {
		if strings.HasPrefix(name, "_") || name == "sys_id" {
			continue
		}
		switch v := rec[name].(type) {
		case string:
			if len(v) > len(text) {
				field, sub, text = name, "", v
			}
		case map[string]any:
			for _, k := range sortedFieldNames(v) {
				if s, ok := v[k].(string); ok && len(s) > len(text) {
					field, sub, text = name, k, s
				}
			}
		}
	}
	return field, sub, text
}

// largestField is the field of rec with the longest encoding that may be
// left out: not sys_id, number or the server's own _ fields.
func largestField(rec map[string]any) string {
	best, size := "", 0
	for _, name := range sortedFieldNames(rec) {
		if strings.HasPrefix(name, "_") || name == "sys_id" || name == "number" {
			continue
		}
		if b, _ := marshal(rec[name]); len(b) > size {
			best, size = name, len(b)
		}
	}
	return best
}

// fitInto cuts rec, which out holds at key, so that out as a whole fits
// budget. It reports whether rec was changed.
func fitInto(out map[string]any, key string, rec map[string]any, budget int) bool {
	out[key] = map[string]any{}
	b, _ := marshal(out)
	out[key] = rec
	return fitRecord(rec, budget-(len(b)-len("{}")))
}

// fitRecordAnswer makes out, which holds one record at recKey and lists
// (journal entries, tasks) under listKeys, fit budget. The lists give way
// first, down to half the budget: their last items (the oldest entries)
// are left out, and a journal entry left alone has its text cut. Then the
// record is cut to what the rest leaves. What was cut is said in
// out["budget_note"].
func fitRecordAnswer(out map[string]any, recKey string, budget int, listKeys ...string) {
	if b, _ := marshal(out); len(b) <= budget {
		return
	}
	rec, _ := out[recKey].(map[string]any)
	if rec == nil {
		return
	}
	rest := func() int {
		out[recKey] = map[string]any{}
		b, _ := marshal(out)
		out[recKey] = rec
		return len(b)
	}

	var said []string
	for _, key := range listKeys {
		n := listLen(out[key])
		kept, textCut := n, false
		for kept > 0 && rest() > budget/2 {
			if entries, ok := out[key].([]journalEntry); ok && kept == 1 && !textCut {
				over := rest() - budget/2
				if len(entries[0].Text) > over+minCut {
					e := append([]journalEntry(nil), entries[0])
					e[0].Text = cutEncoded(e[0].Text, over+len(cutMark)) + cutMark
					out[key], textCut = e, true
					continue
				}
			}
			kept--
			out[key] = listHead(out[key], kept)
		}
		switch {
		case kept < n:
			said = append(said, fmt.Sprintf("%s keeps the first %d of %d", key, kept, n))
		case textCut:
			said = append(said, fmt.Sprintf("the text of the one %s entry was cut (it ends in %s)", key, cutMark))
		}
	}

	// Reserve the longer note while the record is fitted, then say only
	// what happened.
	note := func(recordCut bool) string {
		parts := said
		if recordCut {
			parts = append(parts[:len(parts):len(parts)], "long values of the "+recKey+" were cut or left out (its _cut_fields and _left_out_fields name them)")
		}
		return "The answer was cut to fit the size budget: " + strings.Join(parts, "; ") + ". Ask for fewer fields or entries to see more."
	}
	out["budget_note"] = note(true)
	if fitInto(out, recKey, rec, budget) {
		return
	}
	if len(said) == 0 {
		delete(out, "budget_note")
		return
	}
	out["budget_note"] = note(false)
}

func listLen(v any) int {
	switch l := v.(type) {
	case []journalEntry:
		return len(l)
	case []map[string]any:
		return len(l)
	}
	return 0
}

func listHead(v any, n int) any {
	switch l := v.(type) {
	case []journalEntry:
		return l[:n]
	case []map[string]any:
		return l[:n]
	}
	return v
}
