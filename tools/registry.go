// Package tools is the MCP tool registry: every tool's definition,
// toolset and annotations, the filters that choose what is registered,
// argument normalising, and the shaping of answers for a model.
package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"github.com/rs/zerolog"

	"servicenow-mcp/config"
	"servicenow-mcp/oauth"
	"servicenow-mcp/servicenow"
	"servicenow-mcp/storage"
)

// Deps is what tool handlers use.
type Deps struct {
	Config *config.Config
	Tokens *oauth.Manager
	Client *servicenow.Client
	Log    zerolog.Logger
	// ReadOnly limits servicenow_request to GET.
	ReadOnly bool
	// Budget is the most bytes one answer may hold.
	Budget int
	// UserArgument adds an optional `user` argument, honoured only for
	// callers that may name the user (gateway keys).
	UserArgument bool
	// Stopping, when set, ends with the server: calls still in flight then
	// stop and answer that the server is shutting down, instead of being
	// cut off without an answer.
	Stopping context.Context
}

// ErrShuttingDown is the cause of a call stopped by Deps.Stopping.
var ErrShuttingDown = errors.New("the server is shutting down")

// Handler runs one tool call with normalised arguments.
type Handler func(ctx context.Context, d *Deps, call *Call) *mcp.CallToolResult

// Def defines one tool. Annotation hints are explicit fields so that a
// forgotten hint is a compile-visible zero, checked by a test.
type Def struct {
	Name        string
	Toolset     string
	Title       string
	Description string
	ReadOnly    bool
	Destructive bool
	Idempotent  bool
	OpenWorld   bool
	Params      []Param
	// NoConnection leaves out the common `connection` argument.
	NoConnection bool
	Handler      Handler
	// ReadOnlyMode, when set, keeps a tool that writes registered in
	// read-only mode, as the definition it returns: one that only reads,
	// with hints and arguments to match. A tool that writes without it is
	// left out in read-only mode.
	ReadOnlyMode func(Def) Def
}

// Toolset groups tools; default ones are on unless a selection names others.
type Toolset struct {
	Name        string
	Description string
	Default     bool
	Always      bool
}

// Toolsets lists every toolset in display order.
var Toolsets = []Toolset{
	{Name: "account", Description: "link, inspect and unlink the user's ServiceNow account", Always: true, Default: true},
	{Name: "request", Description: "raw calls to any ServiceNow REST API as the user", Default: true},
	{Name: "tables", Description: "query, read, create, update, delete, aggregate and describe records of any table", Default: true},
	{Name: "incidents", Description: "list, read, create, update, comment on and resolve incidents", Default: true},
	{Name: "changes", Description: "list, read, create and update change requests, and add change tasks"},
	{Name: "knowledge", Description: "search knowledge articles and read one in full"},
	{Name: "catalog", Description: "browse and order Service Catalog items, and follow a request"},
	{Name: "users", Description: "find users and groups, and list a group's members"},
	{Name: "attachments", Description: "list, download and upload files attached to records"},
}

var registry []Def

func register(defs ...Def) { registry = append(registry, defs...) }

// All returns every defined tool, sorted by name.
func All() []Def {
	out := slices.Clone(registry)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Select applies toolsets, explicit tools, exclusions and read-only mode,
// in that order. Explicit tools add to the toolsets (the default ones
// when none are named). Unknown names, and a tool that writes named
// together with read-only mode, are errors.
func Select(sel config.Tools) ([]Def, error) {
	all := All()
	byName := map[string]Def{}
	for _, d := range all {
		byName[d.Name] = d
	}
	sets := map[string]Toolset{}
	for _, ts := range Toolsets {
		sets[ts.Name] = ts
	}

	want := map[string]bool{}
	for _, ts := range Toolsets {
		if ts.Always || (len(sel.Toolsets) == 0 && ts.Default) {
			want[ts.Name] = true
		}
	}
	for _, name := range sel.Toolsets {
		if name == "all" {
			for n := range sets {
				want[n] = true
			}
			continue
		}
		if name == "default" {
			for _, ts := range Toolsets {
				if ts.Default {
					want[ts.Name] = true
				}
			}
			continue
		}
		if _, ok := sets[name]; !ok {
			return nil, fmt.Errorf("unknown toolset %q: choose from %s, all, default", name, strings.Join(toolsetNames(), ", "))
		}
		want[name] = true
	}
	chosen := map[string]bool{}
	for _, d := range all {
		if want[d.Toolset] {
			chosen[d.Name] = true
		}
	}
	for _, name := range sel.Enable {
		d, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("unknown tool %q in tools: see `servicenow-mcp serve --help` for the list", name)
		}
		if sel.ReadOnly && !d.ReadOnly && d.ReadOnlyMode == nil {
			return nil, fmt.Errorf("tool %q changes ServiceNow, but read-only mode is on: drop it from tools, or turn read_only off", name)
		}
		chosen[name] = true
	}
	for _, name := range sel.Exclude {
		d, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("unknown tool %q in exclude_tools: see `servicenow-mcp serve --help` for the list", name)
		}
		if sets[d.Toolset].Always {
			return nil, fmt.Errorf("tool %q cannot be excluded: the account tools are always on", name)
		}
		delete(chosen, name)
	}

	var out []Def
	for _, d := range all {
		if !chosen[d.Name] {
			continue
		}
		if sel.ReadOnly && !d.ReadOnly {
			switch {
			case d.ReadOnlyMode != nil:
				d = d.ReadOnlyMode(d)
			case !sets[d.Toolset].Always:
				continue
			}
		}
		out = append(out, d)
	}
	return out, nil
}

func toolsetNames() []string {
	var out []string
	for _, ts := range Toolsets {
		out = append(out, ts.Name)
	}
	return out
}

// Tool builds the MCP definition of d.
func (d Def) Tool(userArgument bool) mcp.Tool {
	schema, _ := json.Marshal(d.schema(userArgument))
	t := mcp.NewToolWithRawSchema(d.Name, d.Description, schema)
	t.Annotations = mcp.ToolAnnotation{
		Title:           d.Title,
		ReadOnlyHint:    mcp.ToBoolPtr(d.ReadOnly),
		DestructiveHint: mcp.ToBoolPtr(d.Destructive),
		IdempotentHint:  mcp.ToBoolPtr(d.Idempotent),
		OpenWorldHint:   mcp.ToBoolPtr(d.OpenWorld),
	}
	return t
}

// Register adds the selected tools to s, wrapped with the common steps:
// argument checks, identity, a time bound, panics as results, and one
// log line per call.
func Register(s *server.MCPServer, d *Deps, defs []Def) {
	for _, def := range defs {
		def := def
		s.AddTool(def.Tool(d.UserArgument), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return run(ctx, d, def, req), nil
		})
	}
}

func run(ctx context.Context, d *Deps, def Def, req mcp.CallToolRequest) (res *mcp.CallToolResult) {
	start := time.Now()
	call := &Call{Tool: def.Name}
	defer func() {
		if p := recover(); p != nil {
			d.Log.Error().Str("tool", def.Name).Interface("panic", fmt.Sprint(p)).Msg("tool panicked")
			res = errorResult("internal error in %s; the server log has details", def.Name)
			call.outcome = "panic"
		}
		logCall(d.Log, call, res, time.Since(start))
	}()

	if d.Stopping != nil {
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		stop := context.AfterFunc(d.Stopping, func() { cancel(ErrShuttingDown) })
		defer func() { stop(); cancel(nil) }()
	}
	if d.Config != nil && d.Config.Timeouts.ToolCall > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Config.Timeouts.ToolCall)
		defer cancel()
	}

	args, err := normalise(def.params(d.UserArgument), req.GetRawArguments())
	if err != nil {
		call.outcome = "bad_arguments"
		call.Key = loggedIdentity(ctx, d, def, req.GetRawArguments())
		return errorResult("%s", err.Error())
	}
	call.Args = args
	if err := call.resolveIdentity(ctx, d, def); err != nil {
		call.outcome = "bad_arguments"
		call.Key = loggedIdentity(ctx, d, def, req.GetRawArguments())
		return errorResult("%s", err.Error())
	}
	return def.Handler(ctx, d, call)
}

// loggedIdentity is, for the log line of a call refused before its
// identity was resolved, the best guess at who called on which
// connection: the caller's user (or the user a gateway named), and the
// connection named if it exists, else the default one. It is never used
// to act.
func loggedIdentity(ctx context.Context, d *Deps, def Def, raw any) storage.AccountKey {
	var key storage.AccountKey
	in, _ := rawObject(raw)
	caller, _ := CallerFrom(ctx)
	key.User = caller.User
	if named, _ := in["user"].(string); named != "" && d.UserArgument && caller.MayNameUser && config.CheckUserName(named) == "" {
		key.User = named
	}
	if def.NoConnection || d.Config == nil {
		return key
	}
	name, _ := in["connection"].(string)
	if conn, err := d.Config.Connection(name); err == nil {
		key.Connection = conn.Name
	}
	return key
}

func logCall(log zerolog.Logger, c *Call, res *mcp.CallToolResult, took time.Duration) {
	outcome := c.outcome
	if outcome == "" {
		outcome = "ok"
		if res != nil && res.IsError {
			outcome = "error"
		}
	}
	ev := log.Info()
	if outcome != "ok" && outcome != "needs_authorization" {
		ev = log.Warn()
	}
	ev.Str("tool", c.Tool).Str("connection", c.Key.Connection).Str("user", c.Key.User).
		Str("outcome", outcome).Dur("duration", took).Msg("tool call")
}

// Instructions is the MCP server's instructions text for the selected tools.
func Instructions(defs []Def) string {
	var b strings.Builder
	b.WriteString("ServiceNow tools acting as the end user on their own ServiceNow instance. ")
	b.WriteString("When a tool answers with status authorization_required, give the user the authorization_url to open and sign in; ")
	b.WriteString("after they approve, call the tool again. Tokens are never shown to you.\n\nTools:\n")
	for _, def := range defs {
		fmt.Fprintf(&b, "- %s: %s\n", def.Name, firstSentence(def.Description))
	}
	return b.String()
}

// HelpText lists the toolsets and tools for --help.
func HelpText() string {
	var b strings.Builder
	for _, ts := range Toolsets {
		state := ""
		switch {
		case ts.Always:
			state = " (always on)"
		case ts.Default:
			state = " (default)"
		}
		fmt.Fprintf(&b, "  %s%s: %s\n", ts.Name, state, ts.Description)
		for _, def := range All() {
			if def.Toolset == ts.Name {
				fmt.Fprintf(&b, "      %s\n", def.Name)
			}
		}
	}
	return b.String()
}

// MarkdownTable renders the README's tool table.
func MarkdownTable() string {
	var b strings.Builder
	var on, off []string
	defaults := 0
	for _, ts := range Toolsets {
		if ts.Default || ts.Always {
			on = append(on, ts.Name)
			for _, def := range All() {
				if def.Toolset == ts.Name {
					defaults++
				}
			}
		} else {
			off = append(off, ts.Name)
		}
	}
	fmt.Fprintf(&b, "On by default: the %s toolsets (%d tools). Off until named in `--toolsets` (or `--toolsets all`): %s.\n\n",
		strings.Join(on, ", "), defaults, strings.Join(off, ", "))
	b.WriteString("| tool | toolset | read-only | what it does |\n|---|---|---|---|\n")
	for _, ts := range Toolsets {
		for _, def := range All() {
			if def.Toolset != ts.Name {
				continue
			}
			ro := "no"
			if def.ReadOnly {
				ro = "yes"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", def.Name, def.Toolset, ro, firstSentence(def.Description))
		}
	}
	return b.String()
}

// firstSentence cuts s after its first full stop, passing over the
// abbreviations e.g. and i.e.
func firstSentence(s string) string {
	for from := 0; ; {
		i := strings.Index(s[from:], ". ")
		if i < 0 {
			return s
		}
		end := from + i + 1
		if strings.HasSuffix(s[:end], "e.g.") || strings.HasSuffix(s[:end], "i.e.") {
			from = end
			continue
		}
		return s[:end]
	}
}
