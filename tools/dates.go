package tools

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"servicenow-mcp/servicenow"
)

// The tools write date-times as ISO 8601 UTC and models send them back
// that way, but ServiceNow documents only "YYYY-MM-DD HH:MM:SS" (UTC
// through the API) for a date-time and "YYYY-MM-DD" for a date; what it
// cannot read it may silently compare as text. So every date a model
// writes is turned into ServiceNow's form before it is sent.

// dateTimeLayouts are the forms a date-time may be written in, after
// upper-casing (t and z are read as T and Z). One without a zone is UTC.
var dateTimeLayouts = []string{
	time.RFC3339Nano, // 2025-01-31T09:00:00Z, 2025-01-31T11:00:00.5+02:00
	"2006-01-02T15:04Z07:00",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02T15:04",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02 15:04",
	time.DateOnly,
}

// acceptedDates says in a message which forms are read.
const acceptedDates = "give a UTC date-time as 2025-01-31 09:00:00, an ISO 8601 date-time with Z or an offset " +
	"(2025-01-31T09:00:00Z, 2025-01-31T11:00:00+02:00), or a date (2025-01-31)"

// parseDateTime reads a point in time in one of dateTimeLayouts.
func parseDateTime(s string) (time.Time, bool) {
	s = strings.ToUpper(strings.TrimSpace(s))
	for _, layout := range dateTimeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// dateValue turns a date or date-time written for field f into the form
// ServiceNow stores: "YYYY-MM-DD HH:MM:SS" UTC for a date-time field,
// "YYYY-MM-DD" for a date field (a date-time is taken at its UTC date).
// Other fields are passed as given.
func dateValue(f *FieldMeta, v string) (string, error) {
	if !f.IsDateTime() && !f.IsDate() {
		return v, nil
	}
	t, ok := parseDateTime(v)
	if !ok {
		kind := "date-time"
		if f.IsDate() {
			kind = "date"
		}
		return "", &servicenow.InputError{Msg: fmt.Sprintf("field %s: cannot read %q as a %s: %s", f.Name, clipArg(v), kind, acceptedDates)}
	}
	if f.IsDate() {
		return t.Format(time.DateOnly), nil
	}
	return t.Format(time.DateTime), nil
}

// rawDateError says how to rewrite a value of an encoded query that holds
// an ISO 8601 date-time for a date field, which ServiceNow does not read;
// nil when there is none. ServiceNow's own forms and anything else (such
// as javascript:gs.daysAgoStart(7)) are left to ServiceNow.
func rawDateError(f *FieldMeta, p servicenow.EncodedPart) error {
	if !f.IsDateTime() && !f.IsDate() {
		return nil
	}
	values := []string{p.Value}
	switch p.Op {
	case "BETWEEN":
		values = strings.Split(p.Value, "@")
	case "IN", "NOT IN":
		values = strings.Split(p.Value, ",")
	}
	for _, v := range values {
		if !strings.ContainsAny(v, "Tt") {
			continue
		}
		if _, ok := parseDateTime(v); !ok {
			continue
		}
		want, _ := dateValue(f, v)
		return &servicenow.InputError{Msg: fmt.Sprintf("field %s: ServiceNow does not read the ISO 8601 date-time %q in an encoded query; write %s (UTC) instead",
			p.Field, clipArg(v), want)}
	}
	return nil
}

var sincePattern = regexp.MustCompile(`^(\d{1,5})\s*([mhdw])$`)

// parseSince reads a point in time, or a span back from now (24h, 7d),
// as ServiceNow's UTC "YYYY-MM-DD HH:MM:SS".
func parseSince(s string, now time.Time) (string, error) {
	s = strings.TrimSpace(s)
	if m := sincePattern.FindStringSubmatch(strings.ToLower(s)); m != nil {
		n, _ := strconv.Atoi(m[1])
		unit := map[string]time.Duration{"m": time.Minute, "h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour}[m[2]]
		return now.Add(-time.Duration(n) * unit).UTC().Format(time.DateTime), nil
	}
	if t, ok := parseDateTime(s); ok {
		return t.Format(time.DateTime), nil
	}
	return "", fmt.Errorf("cannot read %q as a time: give a date (2025-01-31), a date-time (2025-01-31T09:00:00Z) or a span such as 24h or 7d", clipArg(s))
}
