package servicenow

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
)

// Condition is one test of a field against values. Field is a column
// name, optionally dot-walked through references (caller_id.email).
type Condition struct {
	Field  string
	Op     string
	Values []string
}

// Order sorts a list by one field.
type Order struct {
	Field string
	Desc  bool
}

// Query is a list filter built from parts. All conditions must hold; each
// group in Any must have at least one condition that holds; Raw is an
// encoded query the caller wrote, checked elsewhere against the table's
// dictionary, and ANDed with the structured parts (see CheckRaw).
type Query struct {
	All   []Condition
	Any   [][]Condition
	Raw   string
	Order []Order
}

// Operators lists the condition operators a structured query may use.
var Operators = []string{
	"=", "!=", "LIKE", "NOT LIKE", "STARTSWITH", "ENDSWITH", "IN", "NOT IN",
	"ISEMPTY", "ISNOTEMPTY", "<", "<=", ">", ">=", "BETWEEN",
}

// valueCount is how many values each operator takes; -1 means one or more.
var valueCount = map[string]int{
	"=": 1, "!=": 1, "LIKE": 1, "NOT LIKE": 1, "STARTSWITH": 1, "ENDSWITH": 1,
	"IN": -1, "NOT IN": -1, "ISEMPTY": 0, "ISNOTEMPTY": 0,
	"<": 1, "<=": 1, ">": 1, ">=": 1, "BETWEEN": 2,
}

var fieldPattern = regexp.MustCompile(`^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$`)

// ValidField reports whether name is a column name, optionally dot-walked.
func ValidField(name string) bool {
	return len(name) <= 400 && fieldPattern.MatchString(name)
}

// Encode builds the sysparm_query value. A value can never add, widen or
// end a condition: what cannot be written safely (a caret, which ServiceNow
// documents no escape for, so ^OR or ^NQ in a value would start a new
// condition; a comma inside an IN value,
// an @ inside a BETWEEN bound, a javascript: value that the instance would
// run, control characters) is refused with an InputError naming the field.
// URL-special characters need nothing here: the query is URL-encoded once,
// when the request is sent.
func (q Query) Encode() (string, error) {
	var parts []string
	for _, c := range q.All {
		s, err := c.encode()
		if err != nil {
			return "", err
		}
		parts = append(parts, s)
	}
	for _, group := range q.Any {
		if len(group) == 0 {
			continue
		}
		var ors []string
		for _, c := range group {
			s, err := c.encode()
			if err != nil {
				return "", err
			}
			ors = append(ors, s)
		}
		parts = append(parts, strings.Join(ors, "^OR"))
	}
	structured := strings.Join(parts, "^")

	// A caret at either end joins nothing; left at the end it would meet
	// the ORDERBY that follows as an empty condition.
	raw := strings.Trim(strings.TrimSpace(q.Raw), "^")
	if err := CheckRaw(raw, structured != ""); err != nil {
		return "", err
	}
	out := joinRaw(structured, raw)

	for _, o := range q.Order {
		if !ValidField(o.Field) {
			return "", &InputError{Msg: fmt.Sprintf("cannot order by %q: a field name is lower-case letters, digits and _ (dot-walked with .)", o.Field)}
		}
		key := "ORDERBY"
		if o.Desc {
			key = "ORDERBYDESC"
		}
		if out != "" {
			out += "^"
		}
		out += key + o.Field
	}
	return out, nil
}

// joinRaw ANDs the structured conditions with a raw query that CheckRaw
// accepted.
func joinRaw(structured, raw string) string {
	switch {
	case raw == "":
		return structured
	case structured == "":
		return raw
	}
	return structured + "^" + raw
}

func (c Condition) encode() (string, error) {
	if !ValidField(c.Field) {
		return "", &InputError{Msg: fmt.Sprintf("%q is not a field name: use lower-case letters, digits and _ (dot-walk references with ., e.g. caller_id.email)", c.Field)}
	}
	want, ok := valueCount[c.Op]
	if !ok {
		return "", &InputError{Msg: fmt.Sprintf("operator %q (field %s) is not supported; use one of %s", c.Op, c.Field, strings.Join(Operators, ", "))}
	}
	switch {
	case want == -1 && len(c.Values) == 0:
		return "", &InputError{Msg: fmt.Sprintf("field %s: %s needs at least one value", c.Field, c.Op)}
	case want >= 0 && len(c.Values) != want:
		return "", &InputError{Msg: fmt.Sprintf("field %s: %s takes %d value(s), got %d", c.Field, c.Op, want, len(c.Values))}
	}
	for _, v := range c.Values {
		if err := checkValue(c, v); err != nil {
			return "", err
		}
	}

	escaped := c.Values
	var out string
	switch c.Op {
	case "ISEMPTY", "ISNOTEMPTY":
		out = c.Field + c.Op
	case "IN", "NOT IN":
		out = c.Field + c.Op + strings.Join(escaped, ",")
	case "BETWEEN":
		out = c.Field + c.Op + escaped[0] + "@" + escaped[1]
	default:
		out = c.Field + c.Op + escaped[0]
	}

	// A value can also change the operator it follows: "<" then "=5"
	// reads as "<=" then "5". Read the condition back to be sure.
	if p, err := parseCondition(out); err != nil || p.Op != c.Op {
		return "", &InputError{Msg: fmt.Sprintf("value %q for field %s cannot follow operator %s: ServiceNow would read a different operator; rephrase the condition", c.Values[0], c.Field, c.Op)}
	}
	return out, nil
}

func checkValue(c Condition, v string) error {
	bad := func(why string) error {
		return &InputError{Msg: fmt.Sprintf("value %q for field %s cannot be sent safely: %s", v, c.Field, why)}
	}
	for _, r := range v {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return bad("it contains a control character or invalid text")
		}
	}
	if strings.Contains(v, "^") {
		return bad("^ joins conditions in an encoded query and ServiceNow offers no way to escape it; match the text on either side of it with LIKE instead")
	}
	if strings.HasPrefix(strings.ToLower(strings.TrimSpace(v)), "javascript:") {
		return bad("ServiceNow would run it as a script instead of comparing it; pass the literal value you mean (use \"me\" for the current user)")
	}
	switch c.Op {
	case "IN", "NOT IN":
		if strings.Contains(v, ",") {
			return bad("IN separates values with commas, so one value cannot contain a comma; use = or LIKE for it")
		}
	case "BETWEEN":
		if strings.Contains(v, "@") {
			return bad("BETWEEN separates its two bounds with @, so a bound cannot contain @")
		}
	}
	return nil
}

// CheckRaw refuses an encoded query that could return more than it says
// once it is sent: one with control characters; one whose first condition
// joins by OR or NQ, which would widen the conditions before it; and,
// when structured conditions come before it (structured), one with ^NQ:
// A^B^NQC means (A and B) or C, so the structured conditions would hold
// only for the first query. Carets are split plainly here, without
// reading ^^ as a literal caret, so that no reading of the query can
// slip an OR or NQ past the check.
func CheckRaw(raw string, structured bool) error {
	for _, r := range raw {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return &InputError{Msg: "the encoded query contains a control character or invalid text"}
		}
	}
	first := firstCondition(raw)
	switch {
	case strings.HasPrefix(first, "OR"):
		return &InputError{Msg: fmt.Sprintf("the encoded query starts with OR (%q), which would join it by OR to the conditions before it and widen them: "+
			"start it with a condition (%s), and to OR conditions together write them all in the encoded query (a=1^ORb=2)", clip(first), clip(first[2:]))}
	case strings.HasPrefix(first, "NQ"):
		return &InputError{Msg: fmt.Sprintf("the encoded query starts with NQ (%q), which would start a new query ORed with the conditions before it and widen them: "+
			"leave out the leading NQ", clip(first))}
	}
	if structured && strings.Contains(raw, "^NQ") {
		return &InputError{Msg: "the encoded query holds ^NQ, which ORs whole queries (A^B^NQC means (A and B) or C), " +
			"so the other filters and conditions would hold only for its first part: put every condition in the encoded query alone, " +
			"or drop the ^NQ and join conditions with ^ and ^OR"}
	}
	return nil
}

// firstCondition is the first piece of raw that is not empty or a sort.
func firstCondition(raw string) string {
	for _, piece := range strings.Split(raw, "^") {
		piece = strings.TrimSpace(piece)
		if piece != "" && piece != "EQ" && !strings.HasPrefix(piece, "ORDERBY") {
			return piece
		}
	}
	return ""
}

// EncodedPart is one piece of an encoded query.
type EncodedPart struct {
	// Kind is "condition", "order", or "other" (RLQUERY, text search,
	// GROUPBY: passed on, not checked).
	Kind string
	// Join is how a condition joins the one before: "", "^", "^OR", "^NQ".
	Join  string
	Field string
	Op    string
	Value string
	Desc  bool
}

// rawOperators are the operators ServiceNow understands in an encoded
// query, longest first where one is a prefix of another.
var rawOperators = []string{
	"GT_OR_EQUALS_FIELD", "LT_OR_EQUALS_FIELD", "IN_HIERARCHY_DYNAMIC", "IN_HIERARCHY",
	"NOT LIKE", "NOT IN", "ISNOTEMPTY", "ISEMPTY", "STARTSWITH", "ENDSWITH", "BETWEEN",
	"ANYTHING", "EMPTYSTRING", "NSAMEAS", "SAMEAS", "GT_FIELD", "LT_FIELD", "DYNAMIC",
	"DATEPART", "RELATIVEGT", "RELATIVELT", "RELATIVEGE", "RELATIVELE", "RELATIVEEE",
	"MORETHAN", "LESSTHAN", "VALCHANGES", "CHANGESFROM", "CHANGESTO", "NOTON", "ON",
	"LIKE", "IN", "!=", ">=", "<=", "=", "<", ">",
}

// ParseEncoded splits an encoded query into its parts, reading ^^ as a
// literal caret. A piece that is none of a condition, an ORDERBY or a
// known special form is an error naming it: ServiceNow would silently
// ignore it and return more records than asked for.
func ParseEncoded(q string) ([]EncodedPart, error) {
	var out []EncodedPart
	inRelated := false
	for i, piece := range splitCaret(q) {
		join := "^"
		if i == 0 {
			join = ""
		}
		switch {
		case piece == "" || piece == "EQ":
			continue
		case strings.HasPrefix(piece, "RLQUERY"):
			inRelated = true
			out = append(out, EncodedPart{Kind: "other", Value: piece})
			continue
		case strings.HasPrefix(piece, "ENDRLQUERY"):
			inRelated = false
			continue
		case inRelated, strings.HasPrefix(piece, "GROUPBY"), strings.Contains(piece, "TEXTQUERY"),
			strings.Contains(piece, "TEXTINDEXGROUP"):
			out = append(out, EncodedPart{Kind: "other", Value: piece})
			continue
		case strings.HasPrefix(piece, "ORDERBYDESC"):
			out = append(out, EncodedPart{Kind: "order", Field: piece[len("ORDERBYDESC"):], Desc: true})
			continue
		case strings.HasPrefix(piece, "ORDERBY"):
			out = append(out, EncodedPart{Kind: "order", Field: piece[len("ORDERBY"):]})
			continue
		case strings.HasPrefix(piece, "NQ"):
			join, piece = "^NQ", piece[2:]
		case strings.HasPrefix(piece, "OR"):
			join, piece = "^OR", piece[2:]
		}
		if piece == "" && join == "^NQ" {
			continue
		}
		p, err := parseCondition(piece)
		if err != nil {
			return nil, err
		}
		p.Join = join
		out = append(out, p)
	}
	return out, nil
}

func parseCondition(piece string) (EncodedPart, error) {
	n := 0
	for n < len(piece) && isFieldByte(piece[n]) {
		n++
	}
	field, rest := piece[:n], piece[n:]
	if field == "" || !ValidField(field) {
		return EncodedPart{}, &InputError{Msg: fmt.Sprintf("cannot read %q in the encoded query: a condition is <field><operator><value>, e.g. active=true", piece)}
	}
	for _, op := range rawOperators {
		if strings.HasPrefix(rest, op) {
			return EncodedPart{Kind: "condition", Field: field, Op: op, Value: rest[len(op):]}, nil
		}
	}
	return EncodedPart{}, &InputError{Msg: fmt.Sprintf("cannot read %q in the encoded query: no known operator after field %s (operators: %s)", piece, field, strings.Join(Operators, ", "))}
}

func isFieldByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '_' || b == '.'
}

// splitCaret splits on ^, reading ^^ as a literal caret.
func splitCaret(q string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(q); i++ {
		if q[i] != '^' {
			cur.WriteByte(q[i])
			continue
		}
		if i+1 < len(q) && q[i+1] == '^' {
			cur.WriteByte('^')
			i++
			continue
		}
		parts = append(parts, cur.String())
		cur.Reset()
	}
	return append(parts, cur.String())
}
