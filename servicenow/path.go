package servicenow

import (
	"fmt"
	"strings"
)

// ValidatePath accepts only a relative path under /api/ that cannot leave
// the instance or climb out of the API tree.
func ValidatePath(p string) error {
	bad := func(why string) error {
		return &InputError{Msg: fmt.Sprintf("path %q is not allowed: %s. Give a path under /api/, for example /api/now/table/incident, and put query parameters in `query`.", clip(p), why)}
	}
	switch {
	case p == "":
		return bad("it is empty")
	case strings.Contains(p, "://"):
		return bad("it must be a relative path starting with /api/, not a URL")
	case !strings.HasPrefix(p, "/"):
		return bad("it must start with /api/ (a leading slash is missing)")
	case strings.HasPrefix(p, "//"), strings.Contains(p, "//"):
		return bad("it contains //")
	case strings.ContainsAny(p, "\\"):
		return bad("it contains a backslash")
	case strings.ContainsAny(p, "?#"):
		return bad("it contains ? or #")
	case strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f || r == ' ' }):
		return bad("it contains control characters or spaces")
	case strings.Contains(p, "%"):
		return bad("it contains percent-encoding; send the plain characters")
	case !strings.HasPrefix(p, "/api/"):
		return bad("it is outside /api/")
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." || seg == "." {
			return bad("it contains . or .. segments")
		}
	}
	return nil
}

func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}
