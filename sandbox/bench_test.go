package sandbox

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// The sandbox sits in the request path of benchmarks; keep it cheap.
func BenchmarkTableGetOne(b *testing.B) {
	s := New(Options{})
	defer s.Close()
	s.mu.Lock()
	resp := s.issueLocked(seedID("sys_user:alice"), "bench", "")
	s.mu.Unlock()
	tok := resp["access_token"].(string)
	path := "/api/now/table/incident/" + seedID("incident:inc3") + "?sysparm_display_value=all"
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}

func BenchmarkTableQuery(b *testing.B) {
	s := New(Options{})
	defer s.Close()
	s.mu.Lock()
	resp := s.issueLocked(seedID("sys_user:alice"), "bench", "")
	s.mu.Unlock()
	tok := resp["access_token"].(string)
	path := "/api/now/table/incident?sysparm_limit=10&sysparm_query=active=true%5EORDERBYDESCopened_at&sysparm_fields=number,short_description,state,caller_id"
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}
