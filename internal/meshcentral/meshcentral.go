// Package meshcentral runs MeshCentral, a real SCS nobody here wrote, for
// tests: the version scripts/meshcentral installs from npm into a cache
// (checked against the sha512 its lock file records), started offline in a
// network namespace the test made, with its Intel AMT provisioning server
// (bare-metal ACM activation over TLS with a provisioning certificate) set
// up, and its own records read back: its log, amtactivation.log and the
// node database.
//
// Each server runs from a private copy whose amtprovisioningserver.js can
// carry the one-line fix for MeshCentral's open issue #4901 (at line 180
// the chain is reversed to root-first, and tls.connect then refuses the
// key): the copy hard-links every file of the cached package but that one,
// which is written anew, so the cache is never changed. Nothing of
// MeshCentral is committed.
package meshcentral

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amtsim/amtsim/internal/measure"
	"github.com/amtsim/amtsim/internal/netns"
	"github.com/amtsim/amtsim/internal/peer"
	"github.com/amtsim/amtsim/internal/syncbuf"
)

// Version is the MeshCentral release the tests run (scripts/meshcentral
// pins it).
const Version = "1.1.55"

// The line #4901 is about, as 1.1.55 has it, and the fix.
const (
	bugLine   = "{ cert: dev.certchain.certs.reverse().join(''), key: dev.certchain.signkey }"
	fixedLine = "{ cert: dev.certchain.certs.join(''), key: dev.certchain.signkey }"
)

// Dir is where scripts/meshcentral installs MeshCentral.
func Dir() string {
	cache := os.Getenv("AMTSIM_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "amtsim")
	}
	return filepath.Join(cache, "meshcentral-"+Version)
}

// Need returns the installed MeshCentral's directory, or skips t (fails it
// with CI=true) when it is not installed.
func Need(t testing.TB) string {
	t.Helper()
	dir := Dir()
	if _, err := os.Stat(filepath.Join(dir, ".installed")); err != nil {
		peer.Missing(t, "MeshCentral "+Version+" is not installed in "+dir+" (make peers, or bash scripts/meshcentral, installs it with npm)")
	}
	if _, err := exec.LookPath("node"); err != nil {
		peer.Missing(t, "node is not installed (MeshCentral needs Node.js)")
	}
	return dir
}

// Options configure a server.
type Options struct {
	// NS is the namespace it runs in; required. Its port 9971 listens on
	// every interface there.
	NS *netns.NS
	// Unpatched leaves #4901 in.
	Unpatched bool
	// SecLevel0 runs Node's OpenSSL at security level 0, which lets it sign
	// a client certificate's CertificateVerify under TLS 1.0 (MD5+SHA-1).
	SecLevel0 bool
	// TrustedFQDN is the provisioning server's trustedFqdn: the CN its
	// activation certificate is chosen by.
	TrustedFQDN string
	// MEBxPassword is what it sets the MEBx password to; AdminPassword the
	// device group's Intel AMT password, given to the admin account.
	MEBxPassword, AdminPassword string
	// CertPEM is the activation certificate chain, leaf first; KeyPEM the
	// leaf's key.
	CertPEM []string
	KeyPEM  string
	// Certs is a directory of MeshCentral's own certificates from an earlier
	// server (SaveCerts), so that this one need not make them (seconds of
	// CPU at each first start).
	Certs string
}

// DeviceGroup is the id of the "Intel AMT only" device group the harness
// writes into MeshCentral's database (no offline tool sets an ACM
// activation policy).
const DeviceGroup = "mesh//amtsimAMTonlyGroupForBareMetalActivation0000000000000000000"

// Server is one MeshCentral process tree.
type Server struct {
	Data string // meshcentral-data
	cmd  *exec.Cmd
	log  *syncbuf.Buffer
	done chan struct{}
}

// Start installs a private copy, writes its configuration and database,
// starts it in o.NS and waits until its provisioning server listens. The
// server stops with the test.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	src := Need(t)
	root := t.TempDir()
	if err := privateCopy(filepath.Join(src, "node_modules"), filepath.Join(root, "node_modules"), !o.Unpatched); err != nil {
		t.Fatalf("meshcentral: private copy: %v", err)
	}
	s := &Server{Data: filepath.Join(root, "meshcentral-data"), log: &syncbuf.Buffer{}, done: make(chan struct{})}
	if err := s.configure(o); err != nil {
		t.Fatalf("meshcentral: %v", err)
	}
	s.cmd = o.NS.Command("node", filepath.Join(root, "node_modules", "meshcentral"), "--datapath", s.Data, "--debug", "amtsca,amt")
	s.cmd.Dir = root
	s.cmd.Env = append(os.Environ(), "NODE_ENV=production")
	if o.SecLevel0 {
		conf := filepath.Join(root, "openssl-seclevel0.cnf")
		if err := os.WriteFile(conf, []byte(secLevel0), 0o644); err != nil {
			t.Fatal(err)
		}
		s.cmd.Env = append(s.cmd.Env, "OPENSSL_CONF="+conf)
	}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	// Its own process group, so that the launcher and the server it starts
	// stop together.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("meshcentral: start: %v", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("MeshCentral's log:\n%s", s.Log())
		}
	})
	s.WaitLog(t, "provisioning server running on port 9971", 90*time.Second)
	return s
}

// secLevel0 is an OpenSSL configuration whose default security level is 0.
// Node reads the nodejs_conf section of OPENSSL_CONF's file, OpenSSL's own
// tools openssl_conf: both name it.
const secLevel0 = `nodejs_conf = default_conf
openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
CipherString = DEFAULT@SECLEVEL=0
`

func (s *Server) configure(o Options) error {
	if err := os.MkdirAll(s.Data, 0o755); err != nil {
		return err
	}
	if o.Certs != "" {
		if err := copyCerts(o.Certs, s.Data); err != nil {
			return err
		}
	}
	var files []string
	for i, c := range o.CertPEM {
		name := fmt.Sprintf("activation-%d.pem", i)
		if err := os.WriteFile(filepath.Join(s.Data, name), []byte(c), 0o644); err != nil {
			return err
		}
		files = append(files, name)
	}
	if err := os.WriteFile(filepath.Join(s.Data, "activation-key.pem"), []byte(o.KeyPEM), 0o600); err != nil {
		return err
	}
	cfg := map[string]any{
		"settings": map[string]any{
			"cert": "meshcentral.amtsim.test", "port": 4430, "redirPort": 0, "mpsPort": 0, "exactPorts": true,
			"selfUpdate": false, "noAgentUpdate": 1,
			"AmtProvisioningServer": map[string]any{"deviceGroup": DeviceGroup, "newMebxPassword": o.MEBxPassword,
				"trustedFqdn": o.TrustedFQDN, "ip": "0.0.0.0"},
		},
		"domains": map[string]any{"": map[string]any{"AmtAcmActivation": map[string]any{
			"log": "amtactivation.log", "certs": map[string]any{"amtsim": map[string]any{"certfiles": files, "keyfile": "activation-key.pem"}}}}},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.Data, "config.json"), b, 0o644); err != nil {
		return err
	}
	group, err := json.Marshal(map[string]any{"_id": DeviceGroup, "type": "mesh", "mtype": 1, "name": "amtsim", "desc": "",
		"domain": "", "links": map[string]any{}, "amt": map[string]any{"type": 4, "password": o.AdminPassword}})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.Data, "meshcentral.db"), append(group, '\n'), 0o644)
}

// privateCopy makes dst a node_modules whose packages are symbolic links
// to src's, except meshcentral, whose files are hard links but for the
// patched amtprovisioningserver.js.
func privateCopy(src, dst string, patch bool) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Name() == "meshcentral" {
			continue
		}
		if err := os.Symlink(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	msrc, mdst := filepath.Join(src, "meshcentral"), filepath.Join(dst, "meshcentral")
	err = filepath.WalkDir(msrc, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(msrc, p)
		out := filepath.Join(mdst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(out, 0o755)
		case rel == "amtprovisioningserver.js":
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, out)
		}
		return os.Link(p, out)
	})
	if err != nil {
		return err
	}
	js, err := os.ReadFile(filepath.Join(msrc, "amtprovisioningserver.js"))
	if err != nil {
		return err
	}
	if strings.Count(string(js), bugLine) != 1 {
		return errors.New("amtprovisioningserver.js does not hold the #4901 line exactly once: not MeshCentral " + Version + "?")
	}
	if patch {
		js = []byte(strings.Replace(string(js), bugLine, fixedLine, 1))
	}
	return os.WriteFile(filepath.Join(mdst, "amtprovisioningserver.js"), js, 0o644)
}

// copyCerts copies MeshCentral's certificate files (*.crt, *.key) from
// one data directory to another.
func copyCerts(from, to string) error {
	ents, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ".crt") || strings.HasSuffix(n, ".key") {
			b, err := os.ReadFile(filepath.Join(from, n))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(to, n), b, 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}

// SaveCerts keeps the server's own certificates in dir for Options.Certs.
func (s *Server) SaveCerts(dir string) error { return copyCerts(s.Data, dir) }

// Stop ends the process group and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}

// Log is everything MeshCentral has printed (its debug lines included).
func (s *Server) Log() string { return s.log.String() }

// WaitLog waits until the log holds substr.
func (s *Server) WaitLog(t testing.TB, substr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(s.Log(), substr) {
		select {
		case <-s.done:
			if strings.Contains(s.Log(), substr) {
				return
			}
			t.Fatalf("meshcentral exited before logging %q", substr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshcentral did not log %q within %v", substr, within)
		}
	}
}

// Activation is one line of amtactivation.log.
type Activation struct {
	Action  string `json:"action"`
	UUID    string `json:"amtUuid"`
	Realm   string `json:"amtRealm"`
	Version string `json:"amtver"`
	Host    string `json:"host"`
	IP      string `json:"ip"`
	User    string `json:"user"`
	TLS     int    `json:"tls"`
	TLSHash string `json:"tlshash"`
}

// Activations reads amtactivation.log.
func (s *Server) Activations() ([]Activation, error) {
	f, err := os.Open(filepath.Join(s.Data, "amtactivation.log"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Activation
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var a Activation
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			return nil, fmt.Errorf("amtactivation.log: %w", err)
		}
		out = append(out, a)
	}
	return out, sc.Err()
}

// Node is a device in MeshCentral's node database.
type Node struct {
	ID       string `json:"_id"`
	Name     string `json:"name"`
	Mesh     string `json:"meshid"`
	Host     string `json:"host"`
	IntelAMT struct {
		Flags int    `json:"flags"` // 2 CCM, 4 ACM
		State int    `json:"state"` // 2 activated
		TLS   int    `json:"tls"`
		User  string `json:"user"`
		Ver   string `json:"ver"`
		UUID  string `json:"uuid"`
	} `json:"intelamt"`
}

// Nodes reads the node records of meshcentral.db (NeDB appends a line per
// write: the last line of an id wins, and a $$deleted line removes it).
func (s *Server) Nodes() (map[string]Node, error) {
	f, err := os.Open(filepath.Join(s.Data, "meshcentral.db"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]Node{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var rec struct {
			ID      string `json:"_id"`
			Type    string `json:"type"`
			Deleted bool   `json:"$$deleted"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue // NeDB's index lines and the like
		}
		if rec.Deleted {
			delete(out, rec.ID)
			continue
		}
		if rec.Type != "node" {
			continue
		}
		var n Node
		if err := json.Unmarshal(sc.Bytes(), &n); err != nil {
			return nil, fmt.Errorf("meshcentral.db: %w", err)
		}
		out[n.ID] = n
	}
	return out, sc.Err()
}

// CPU is the CPU time (user and system) of the process tree so far: the
// launcher and the server it started.
func (s *Server) CPU() (time.Duration, error) {
	var total time.Duration
	for _, pid := range tree(s.cmd.Process.Pid) {
		d, err := measure.ProcessCPUTime(pid)
		if err != nil {
			continue // gone meanwhile
		}
		total += d
	}
	return total, nil
}

// tree is pid and its descendants, from /proc/PID/task/*/children.
func tree(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", out[i]))
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, w := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(w); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}
