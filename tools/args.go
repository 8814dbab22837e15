package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"servicenow-mcp/config"
	"servicenow-mcp/storage"
)

// Param describes one argument. Its JSON Schema is kept to what strict
// clients accept: one type, properties on objects, items on arrays.
type Param struct {
	Name        string
	Type        string // string, integer, number, boolean, object, array
	Description string
	Required    bool
	Enum        []string
	Min, Max    *float64
	Items       *Param  // for arrays
	Properties  []Param // for objects with known keys
	// Values is the type of an open object's values (a map), e.g. "string".
	Values string
}

func ptr(f float64) *float64 { return &f }

var connectionParam = Param{
	Name: "connection", Type: "string",
	Description: "Name of the ServiceNow connection to use. Leave out to use the default connection.",
}

var userParam = Param{
	Name: "user", Type: "string",
	Description: "End user to act for. Honoured only for gateway callers that the operator allows to name users.",
}

func (d Def) params(userArgument bool) []Param {
	ps := d.Params
	if !d.NoConnection {
		ps = append([]Param{connectionParam}, ps...)
	}
	if userArgument {
		ps = append(ps, userParam)
	}
	return ps
}

func (d Def) schema(userArgument bool) map[string]any {
	return objectSchema(d.params(userArgument))
}

func objectSchema(ps []Param) map[string]any {
	props := map[string]any{}
	var req []string
	for _, p := range ps {
		props[p.Name] = p.schema()
		if p.Required {
			req = append(req, p.Name)
		}
	}
	s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(req) > 0 {
		s["required"] = req
	}
	return s
}

func (p Param) schema() map[string]any {
	s := map[string]any{"type": p.Type}
	if p.Description != "" {
		s["description"] = p.Description
	}
	if len(p.Enum) > 0 {
		s["enum"] = p.Enum
	}
	if p.Min != nil {
		s["minimum"] = *p.Min
	}
	if p.Max != nil {
		s["maximum"] = *p.Max
	}
	switch p.Type {
	case "array":
		item := Param{Type: "string"}
		if p.Items != nil {
			item = *p.Items
		}
		s["items"] = item.schema()
	case "object":
		if len(p.Properties) > 0 {
			inner := objectSchema(p.Properties)
			s["properties"] = inner["properties"]
			if r, ok := inner["required"]; ok {
				s["required"] = r
			}
			s["additionalProperties"] = false
		} else {
			s["properties"] = map[string]any{}
			if p.Values != "" {
				s["additionalProperties"] = map[string]any{"type": p.Values}
			} else {
				s["additionalProperties"] = true
			}
		}
	}
	return s
}

// Args are normalised arguments: each present key holds a value of its
// declared Go type (string, int64, float64, bool, map[string]any, []any).
type Args map[string]any

// normalise checks raw arguments against ps. Models send numbers as
// strings, 10.0 for 10, null for "not given", and objects as JSON text:
// those are accepted where the meaning is plain; anything else is refused
// with a message naming the argument.
func normalise(ps []Param, raw any) (Args, error) {
	in, err := rawObject(raw)
	if err != nil {
		return nil, err
	}
	byName := map[string]Param{}
	for _, p := range ps {
		byName[p.Name] = p
	}
	var unknown []string
	for k := range in {
		if _, ok := byName[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("unknown argument %s; this tool takes: %s", quoteList(unknown), strings.Join(paramNames(ps), ", "))
	}
	out := Args{}
	for _, p := range ps {
		v, ok := in[p.Name]
		if !ok || v == nil {
			if p.Required {
				return nil, fmt.Errorf("argument %q is required: %s", p.Name, p.Description)
			}
			continue
		}
		nv, err := coerce(p, v)
		if err != nil {
			return nil, fmt.Errorf("argument %q: %w", p.Name, err)
		}
		if str, isString := nv.(string); isString && p.Required && strings.TrimSpace(str) == "" {
			return nil, fmt.Errorf("argument %q is required and cannot be empty: %s", p.Name, p.Description)
		}
		out[p.Name] = nv
	}
	return out, nil
}

func rawObject(raw any) (map[string]any, error) {
	switch r := raw.(type) {
	case nil:
		return map[string]any{}, nil
	case map[string]any:
		return r, nil
	case json.RawMessage:
		if len(r) == 0 || string(r) == "null" {
			return map[string]any{}, nil
		}
		var m map[string]any
		d := json.NewDecoder(strings.NewReader(string(r)))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			return nil, errors.New("arguments must be a JSON object")
		}
		return m, nil
	default:
		b, err := json.Marshal(r)
		if err != nil {
			return nil, errors.New("arguments must be a JSON object")
		}
		return rawObject(json.RawMessage(b))
	}
}

func coerce(p Param, v any) (any, error) {
	switch p.Type {
	case "string":
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case json.Number:
			s = x.String()
		case float64:
			s = strconv.FormatFloat(x, 'f', -1, 64)
		case bool:
			s = strconv.FormatBool(x)
		default:
			return nil, errors.New("must be a string")
		}
		if len(p.Enum) > 0 && !contains(p.Enum, s) {
			// The description says what the values mean, and why some
			// are missing (read-only mode).
			return nil, fmt.Errorf("must be one of %s, not %q. %s", strings.Join(p.Enum, ", "), s, p.Description)
		}
		return s, nil
	case "integer":
		f, err := number(v)
		if err != nil {
			return nil, err
		}
		if f != math.Trunc(f) {
			return nil, fmt.Errorf("must be a whole number, not %s", formatNumber(f))
		}
		// Past 2^53 a float64 no longer holds every whole number, and past
		// 2^63 the conversion below would wrap: refuse rather than guess.
		if math.Abs(f) > maxExactInteger {
			return nil, fmt.Errorf("is too large: %s is past %d", formatNumber(f), int64(maxExactInteger))
		}
		if err := p.inRange(f); err != nil {
			return nil, err
		}
		return int64(f), nil
	case "number":
		f, err := number(v)
		if err != nil {
			return nil, err
		}
		if err := p.inRange(f); err != nil {
			return nil, err
		}
		return f, nil
	case "boolean":
		switch x := v.(type) {
		case bool:
			return x, nil
		case string:
			switch strings.ToLower(strings.TrimSpace(x)) {
			case "true":
				return true, nil
			case "false":
				return false, nil
			}
		}
		return nil, errors.New("must be true or false")
	case "object":
		m, err := jsonish[map[string]any](v, "an object")
		if err != nil {
			return nil, err
		}
		if p.Values == "string" {
			for k, val := range m {
				s, err := coerce(Param{Type: "string"}, val)
				if err != nil {
					return nil, fmt.Errorf("value of %q must be a string", k)
				}
				m[k] = s
			}
		}
		if len(p.Properties) > 0 {
			return normalise(p.Properties, m)
		}
		return m, nil
	case "array":
		list, err := jsonish[[]any](v, "an array")
		if err != nil {
			if s, ok := v.(string); ok && p.Items != nil && p.Items.Type == "string" {
				return []any{s}, nil
			}
			return nil, err
		}
		item := Param{Type: "string"}
		if p.Items != nil {
			item = *p.Items
		}
		for i, e := range list {
			ne, err := coerce(item, e)
			if err != nil {
				return nil, fmt.Errorf("item %d: %w", i, err)
			}
			list[i] = ne
		}
		return list, nil
	}
	return v, nil
}

// jsonish accepts a value of type T or a JSON string encoding one.
func jsonish[T any](v any, what string) (T, error) {
	var zero T
	if t, ok := v.(T); ok {
		return t, nil
	}
	s, ok := v.(string)
	if !ok {
		return zero, fmt.Errorf("must be %s", what)
	}
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var t T
	if err := d.Decode(&t); err != nil || d.More() {
		return zero, fmt.Errorf("must be %s (a string was given that is not %s in JSON)", what, what)
	}
	return t, nil
}

func number(v any) (float64, error) {
	var f float64
	switch x := v.(type) {
	case json.Number:
		var err error
		f, err = strconv.ParseFloat(x.String(), 64)
		if err != nil {
			return 0, fmt.Errorf("must be a number, not %q", x.String())
		}
	case float64:
		f = x
	case int:
		f = float64(x)
	case int64:
		f = float64(x)
	case string:
		var err error
		f, err = strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			return 0, fmt.Errorf("must be a number, not %q", x)
		}
	default:
		return 0, errors.New("must be a number")
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, errors.New("must be a finite number")
	}
	return f, nil
}

// maxExactInteger is the largest whole number a float64 holds exactly.
const maxExactInteger = 1<<53 - 1

func (p Param) inRange(f float64) error {
	if p.Min != nil && f < *p.Min {
		return fmt.Errorf("must be at least %s, not %s", formatNumber(*p.Min), formatNumber(f))
	}
	if p.Max != nil && f > *p.Max {
		return fmt.Errorf("must be at most %s, not %s", formatNumber(*p.Max), formatNumber(f))
	}
	return nil
}

// formatNumber writes a number as a person would type it: 1000000, not
// 1e+06; exponents only where plain digits would run very long.
func formatNumber(f float64) string {
	if math.Abs(f) < 1e21 {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func paramNames(ps []Param) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// String returns a string argument, or "" when absent.
func (a Args) String(name string) string {
	s, _ := a[name].(string)
	return s
}

// Int returns an integer argument, or def when absent.
func (a Args) Int(name string, def int64) int64 {
	if v, ok := a[name].(int64); ok {
		return v
	}
	return def
}

// Bool returns a boolean argument, or def when absent.
func (a Args) Bool(name string, def bool) bool {
	if v, ok := a[name].(bool); ok {
		return v
	}
	return def
}

// Object returns an object argument, or nil when absent.
func (a Args) Object(name string) map[string]any {
	m, _ := a[name].(map[string]any)
	if m == nil {
		if n, ok := a[name].(Args); ok {
			return n
		}
	}
	return m
}

// Strings returns a list-of-strings argument.
func (a Args) Strings(name string) []string {
	list, _ := a[name].([]any)
	out := make([]string, 0, len(list))
	for _, v := range list {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// Has reports whether the argument was given.
func (a Args) Has(name string) bool { _, ok := a[name]; return ok }

// Call is one tool call in progress.
type Call struct {
	Tool    string
	Args    Args
	Key     storage.AccountKey
	outcome string
}

// Caller is who sent a request, set by the transport.
type Caller struct {
	User string
	// MayNameUser: the caller is a gateway trusted to name end users.
	MayNameUser bool
}

type callerKey struct{}

// WithCaller returns ctx carrying the caller.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller in ctx.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

func (c *Call) resolveIdentity(ctx context.Context, d *Deps, def Def) error {
	caller, ok := CallerFrom(ctx)
	if !ok || caller.User == "" {
		if !caller.MayNameUser {
			return errors.New("this request carries no end-user identity; the server operator must configure a user")
		}
	}
	user := caller.User
	if named := c.Args.String("user"); named != "" && named != user {
		if !d.UserArgument || !caller.MayNameUser {
			return errors.New("argument \"user\" is not allowed for this caller: the end user comes from the caller's credentials")
		}
		if problem := config.CheckUserName(named); problem != "" {
			return fmt.Errorf("argument \"user\" %s", problem)
		}
		user = named
	}
	if user == "" {
		return errors.New("no end user: a gateway caller must name the user in its user header")
	}
	if def.NoConnection {
		c.Key = storage.AccountKey{User: user}
		return nil
	}
	conn, err := d.Config.Connection(c.Args.String("connection"))
	if err != nil {
		return err
	}
	c.Key = storage.AccountKey{Connection: conn.Name, User: user}
	return nil
}
