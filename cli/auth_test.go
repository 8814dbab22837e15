package cli

import (
	"slices"
	"testing"
)

// TestBrowserCommand: auth login opens the link with the platform's own
// opener, and on other systems only inside a desktop session. The link
// is always one argument of its own, whatever characters it holds.
func TestBrowserCommand(t *testing.T) {
	t.Parallel()
	const link = "https://dev.service-now.com/oauth_auth.do?a=1&b=2;c=$(x)|y"
	tests := []struct {
		name string
		goos string
		env  map[string]string
		want []string
	}{
		{"macOS without DISPLAY", "darwin", nil, []string{"open", link}},
		{"Windows without DISPLAY", "windows", nil, []string{"rundll32", "url.dll,FileProtocolHandler", link}},
		{"Linux under X11", "linux", map[string]string{"DISPLAY": ":0"}, []string{"xdg-open", link}},
		{"Linux under Wayland", "linux", map[string]string{"WAYLAND_DISPLAY": "wayland-0"}, []string{"xdg-open", link}},
		{"Linux without a desktop", "linux", nil, nil},
		{"FreeBSD under X11", "freebsd", map[string]string{"DISPLAY": ":1"}, []string{"xdg-open", link}},
		{"FreeBSD without a desktop", "freebsd", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := browserCommand(tt.goos, func(k string) string { return tt.env[k] }, link)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("browserCommand(%s) = %q, want %q", tt.goos, got, tt.want)
			}
		})
	}
}
