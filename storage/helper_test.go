package storage

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The multi-process tests re-run this test binary as a child that opens
// the same data directory and obeys one-line commands on stdin.
const helperEnv = "STORAGE_TEST_HELPER_DIR"

// runHelper is the child's main loop.
func runHelper() int {
	ctx := context.Background()
	st, err := Open(ctx, Options{Dir: os.Getenv(helperEnv), Keys: Keyring{Current: testKey(1)}})
	if err != nil {
		fmt.Println("err", err)
		return 1
	}
	s := st.(*DiskStore)
	defer s.Close()

	unlocks := map[string]func(){}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		fmt.Println(helperCommand(ctx, s, f, unlocks))
	}
	return 0
}

func helperCommand(ctx context.Context, s *DiskStore, f []string, unlocks map[string]func()) string {
	reply := func(err error) string {
		if err != nil {
			return "err " + strings.ReplaceAll(err.Error(), "\n", " ")
		}
		return "ok"
	}

	switch f[0] {
	case "put": // put <user> <token>
		return reply(s.PutAccount(ctx, testAccount("dev", f[1], f[2])))
	case "get": // get <user>
		a, err := s.GetAccount(ctx, AccountKey{"dev", f[1]})
		if err != nil {
			return reply(err)
		}
		return "token " + a.AccessToken
	case "take": // take <state>...: the states this process consumed
		var took []string
		for _, state := range f[1:] {
			if _, err := s.TakePending(ctx, state); err == nil {
				took = append(took, state)
			} else if !errors.Is(err, ErrNotFound) {
				return reply(err)
			}
		}
		return "took " + strings.Join(took, " ")
	case "lock": // lock <user>
		unlock, err := s.LockAccount(ctx, AccountKey{"dev", f[1]})
		if err == nil {
			unlocks[f[1]] = unlock
		}
		return reply(err)
	case "unlock": // unlock <user>
		unlocks[f[1]]()
		return "ok"
	case "owner":
		s.mu.Lock()
		defer s.mu.Unlock()
		return fmt.Sprint("owner ", s.owner != nil)
	}
	return "err unknown command " + f[0]
}

// child is a helper process seen from the test.
type child struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	once sync.Once
}

func startChild(t *testing.T, dir string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(c.stop)
	return c
}

// do sends one command and returns the child's answer.
func (c *child) do(t *testing.T, command string) string {
	t.Helper()
	if _, err := fmt.Fprintln(c.in, command); err != nil {
		t.Fatalf("child %q: %v", command, err)
	}
	if !c.out.Scan() {
		t.Fatalf("child %q: no answer (%v)", command, c.out.Err())
	}
	return c.out.Text()
}

func (c *child) kill() {
	c.once.Do(func() {
		c.cmd.Process.Kill() // SIGKILL: no chance to clean up
		c.cmd.Wait()
	})
}

func (c *child) stop() {
	c.once.Do(func() {
		c.in.Close()
		c.cmd.Wait()
	})
}

func isOwner(s *DiskStore) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owner != nil
}

func TestTwoProcessesShareOneDirectory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()

	// The child opens first and becomes the owner.
	owner := startChild(t, dir)
	if got := owner.do(t, "put alice a1"); got != "ok" {
		t.Fatalf("child put: %s", got)
	}
	if got := owner.do(t, "owner"); got != "owner true" {
		t.Fatalf("first process: %s", got)
	}

	s := openTest(t, dir, Keyring{Current: testKey(1)})
	if a, err := s.GetAccount(ctx, AccountKey{"dev", "alice"}); err != nil || a.AccessToken != "at-a1" {
		t.Fatalf("read the child's account: %+v, %v", a, err)
	}
	if isOwner(s) {
		t.Fatal("second process became owner while the first lives")
	}
	if err := s.PutAccount(ctx, testAccount("dev", "bob", "b1")); err != nil {
		t.Fatal(err)
	}
	if got := owner.do(t, "get bob"); got != "token at-b1" {
		t.Fatalf("child read of our account: %s", got)
	}

	// The owner dies without warning; the survivor takes over.
	owner.kill()
	if a, err := s.GetAccount(ctx, AccountKey{"dev", "bob"}); err != nil || a.AccessToken != "at-b1" {
		t.Fatalf("after the owner died: %+v, %v", a, err)
	}
	if !isOwner(s) {
		t.Fatal("survivor did not become the owner")
	}
	if err := s.PutAccount(ctx, testAccount("dev", "carol", "c1")); err != nil {
		t.Fatal(err)
	}

	// A newcomer joins the new owner.
	late := startChild(t, dir)
	for user, want := range map[string]string{"alice": "token at-a1", "carol": "token at-c1"} {
		if got := late.do(t, "get "+user); got != want {
			t.Fatalf("newcomer get %s: %s, want %s", user, got, want)
		}
	}
	if got := late.do(t, "owner"); got != "owner false" {
		t.Fatalf("newcomer: %s", got)
	}
}

func TestTakePendingOnceAcrossProcesses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir, Keyring{Current: testKey(1)})
	c := startChild(t, dir)

	var states []string
	for i := range 40 {
		state := fmt.Sprint("state-", i)
		states = append(states, state)
		if err := s.PutPending(ctx, testPending(state, "dev", "alice", time.Now(), time.Hour)); err != nil {
			t.Fatal(err)
		}
	}

	c.do(t, "owner") // connected: both sides start taking at once
	var mine []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, state := range states {
			if _, err := s.TakePending(ctx, state); err == nil {
				mine = append(mine, state)
			} else if !errors.Is(err, ErrNotFound) {
				t.Error(err)
			}
		}
	}()
	// The child goes the other way round: the two meet and contend midway.
	reversed := slices.Clone(states)
	slices.Reverse(reversed)
	theirs := strings.Fields(strings.TrimPrefix(c.do(t, "take "+strings.Join(reversed, " ")), "took"))
	<-done

	all := append(slices.Clone(mine), theirs...)
	slices.Sort(all)
	want := slices.Clone(states)
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Fatalf("taken: ours %v, theirs %v; want each state exactly once", mine, theirs)
	}
	t.Logf("takes: %d here, %d in the child", len(mine), len(theirs))
}

func TestLockAccountAcrossProcesses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, dir, Keyring{Current: testKey(1)})
	c := startChild(t, dir)
	alice := AccountKey{"dev", "alice"}

	if got := c.do(t, "lock alice"); got != "ok" {
		t.Fatalf("child lock: %s", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.LockAccount(ctx, alice); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lock held by the child: err = %v", err)
	}

	c.do(t, "unlock alice")
	unlock, err := s.LockAccount(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	unlock()

	// A holder that dies releases the lock.
	if got := c.do(t, "lock alice"); got != "ok" {
		t.Fatalf("child lock: %s", got)
	}
	c.kill()
	unlock, err = s.LockAccount(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
}

// Two stores of one process on one directory behave as two processes:
// flocks belong to open files, not to processes.
func TestOwnerCloseHandsOver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	first := openTest(t, dir, Keyring{Current: testKey(1)})
	if err := first.PutAccount(ctx, testAccount("dev", "alice", "1")); err != nil {
		t.Fatal(err)
	}
	second := openTest(t, dir, Keyring{Current: testKey(1)})
	if _, err := second.GetAccount(ctx, AccountKey{"dev", "alice"}); err != nil {
		t.Fatal(err)
	}
	if !isOwner(first) || isOwner(second) {
		t.Fatal("want the first store to own the database")
	}

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := second.PutAccount(ctx, testAccount("dev", "bob", "2")); err != nil {
		t.Fatalf("after the owner closed: %v", err)
	}
	if !isOwner(second) {
		t.Fatal("second store did not take over")
	}
}
