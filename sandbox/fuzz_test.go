package sandbox

import (
	"testing"
	"time"
)

// FuzzParseQuery checks that no encoded query can panic the parser, the
// compiler or the evaluator.
func FuzzParseQuery(f *testing.F) {
	for _, seed := range []string{
		"active=true^priority<=2^ORDERBYDESCopened_at",
		"caller_id.user_name=alice^ORcaller_id=javascript:gs.getUserID()",
		"short_descriptionLIKEvpn^NQstateIN1,2,3^descriptionISEMPTY",
		"opened_atBETWEENjavascript:gs.daysAgoStart(7)@javascript:gs.daysAgoEnd(0)",
		"categoryNOT INnetwork,hardware^assigned_toISNOTEMPTY^ORDERBYcaller_id.name",
		"^^^OR^NQ^ORDERBY^ORDERBYDESC",
		"RLQUERYtask.parent,>=1^ENDRLQUERY^number=INC0010001",
		"opened_atONToday@javascript:gs.beginningOfToday()@javascript:gs.endOfToday()",
		"a.b.c.d=1^priorityBETWEEN@^stateSAMEASimpact",
		"javascript:gs.dateGenerate('2026-01-01','start')",
	} {
		f.Add(seed)
	}
	s := New(Options{Now: func() time.Time { return time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC) }})
	defer s.Close()
	td := s.schema["incident"]
	p := &principal{SysID: seedID("sys_user:carol"), UserName: "carol", Roles: map[string]bool{}}
	f.Fuzz(func(t *testing.T, q string) {
		pq := parseQuery(q)
		env := &evalEnv{s: s, user: p, now: s.now()}
		s.mu.RLock()
		defer s.mu.RUnlock()
		cq, err := env.compile(td, pq)
		if err != nil {
			return
		}
		_ = env.selectRows("incident", cq)
	})
}
