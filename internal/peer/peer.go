// Package peer finds the real programs that tests talk to (curl, openssl,
// tshark, dnsmasq, amttool, …) from one list, peers.txt, which
// scripts/peers also reads to install what is missing.
//
// A test that needs a peer calls Need. When the peer is missing the test
// skips with one line that names it and the Debian package to install, and
// the line is appended to the file $AMTSIM_SKIPPED names (make test prints
// that file at the end). With CI=true a missing peer fails the test instead:
// CI installs every peer, so a missing one is a broken install step, not a
// reason to pass. Root works the same way, except that it is never a
// failure: a test that needs root skips without it, and says so.
package peer

import (
	"bufio"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

//go:embed peers.txt
var peersTxt string

// Peer is one line of peers.txt.
type Peer struct {
	Name     string
	Packages []string
	Probe    string // shell command; "" means `command -v Name`
}

// Peers are the lines of peers.txt.
func Peers() ([]Peer, error) { return parse(peersTxt) }

func parse(text string) ([]Peer, error) {
	var ps []Peer
	sc := bufio.NewScanner(strings.NewReader(text))
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("peers.txt:%d: want NAME PACKAGES [PROBE]", ln)
		}
		p := Peer{Name: f[0], Packages: strings.Split(f[1], ",")}
		if len(f) > 2 {
			p.Probe = strings.Join(f[2:], " ")
		}
		ps = append(ps, p)
	}
	return ps, sc.Err()
}

// Lookup reports whether the named peer works here.
func Lookup(name string) error {
	ps, err := Peers()
	if err != nil {
		return err
	}
	return lookupIn(ps, name)
}

func lookupIn(ps []Peer, name string) error {
	for _, p := range ps {
		if p.Name != name {
			continue
		}
		if p.Probe == "" {
			if _, err := exec.LookPath(name); err != nil {
				return fmt.Errorf("%s is not installed (Debian package %s; make test installs it as root)", name, strings.Join(p.Packages, " "))
			}
			return nil
		}
		if err := exec.Command("sh", "-c", p.Probe).Run(); err != nil {
			return fmt.Errorf("%s does not work here: `%s` failed (Debian packages %s; make test installs them as root)", name, p.Probe, strings.Join(p.Packages, " "))
		}
		return nil
	}
	return fmt.Errorf("peer %q is not in internal/peer/peers.txt", name)
}

// Need skips t (fails it with CI=true) unless every named peer works.
func Need(t testing.TB, names ...string) {
	t.Helper()
	ps, err := Peers()
	if err != nil {
		t.Fatal(err)
	}
	needIn(t, ps, names...)
}

func needIn(t testing.TB, ps []Peer, names ...string) {
	t.Helper()
	var missing []string
	for _, n := range names {
		if err := lookupIn(ps, n); err != nil {
			missing = append(missing, err.Error())
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := strings.Join(missing, "; ")
	if InCI() {
		t.Fatalf("CI=true and a peer is missing: %s", msg)
	}
	skip(t, msg)
}

// Root skips t unless the process runs as root; why says what needs it.
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	skip(t, "needs root: "+why)
}

// pkgDir is the test's package directory relative to the module root
// (go test runs a test binary in its package's directory).
func pkgDir() string {
	wd, err := os.Getwd()
	if err != nil {
		return "?"
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if rel, err := filepath.Rel(dir, wd); err == nil {
				return rel
			}
			return wd
		}
		if filepath.Dir(dir) == dir {
			return wd
		}
	}
}

// InCI reports whether CI=true: missing peers are then failures.
func InCI() bool { return os.Getenv("CI") == "true" }

func skip(t testing.TB, msg string) {
	t.Helper()
	if path := os.Getenv("AMTSIM_SKIPPED"); path != "" {
		// O_APPEND writes of one short line do not interleave, so test
		// binaries running side by side may share the file.
		if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			fmt.Fprintf(f, "%s %s: %s\n", pkgDir(), t.Name(), msg)
			f.Close()
		}
	}
	t.Skip("skipped: " + msg)
}

// Missing skips t with msg, or fails it with CI=true, as Need does: for a
// peer that peers.txt does not list because apt does not install it
// (MeshCentral, which scripts/meshcentral installs from npm).
func Missing(t testing.TB, msg string) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true and a peer is missing: %s", msg)
	}
	skip(t, msg)
}
