package netns

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amtsim/amtsim/internal/syncbuf"
)

// KeaOptions say what Kea's DHCPv4 server (kea-dhcp4) serves in a test's
// namespace: a site's DHCP server that keeps up with a burst of 10,000
// boots here, past where dnsmasq stops keeping up (fleet/dhcp_bench_test.go).
type KeaOptions struct {
	Interface string // the kernel side: a TAP or veth with the router's address
	Subnet    string // "198.18.0.0/16"
	Pool      string // "198.18.1.0 - 198.18.255.250"
	Domain    string // the DHCP domain (option 15)
	DNS       string // option 6, if set
	Lease     time.Duration
}

// Kea runs kea-dhcp4 in the namespace until the test ends, its leases in
// memory only, and returns its log (printed if the test fails) once it
// has started serving.
func (ns *NS) Kea(t testing.TB, o KeaOptions) *syncbuf.Buffer {
	t.Helper()
	Need(t, "kea-dhcp4")
	dir := t.TempDir()
	var opts []map[string]string
	if o.Domain != "" {
		opts = append(opts, map[string]string{"name": "domain-name", "data": o.Domain})
	}
	if o.DNS != "" {
		opts = append(opts, map[string]string{"name": "domain-name-servers", "data": o.DNS})
	}
	quiet := func(name string) map[string]any {
		return map[string]any{"name": name, "output_options": []map[string]string{{"output": "stdout"}}, "severity": "WARN"}
	}
	conf := map[string]any{"Dhcp4": map[string]any{
		// Raw sockets: the clients have no address yet.
		"interfaces-config": map[string]any{"interfaces": []string{o.Interface}, "dhcp-socket-type": "raw"},
		"lease-database":    map[string]any{"type": "memfile", "persist": false, "lfc-interval": 0},
		"valid-lifetime":    int(o.Lease.Seconds()),
		"subnet4": []map[string]any{{"id": 1, "subnet": o.Subnet, "pools": []map[string]string{{"pool": o.Pool}},
			"option-data": opts}},
		"loggers": []map[string]any{
			// INFO for the start line Kea is waited for; the per-packet
			// and per-lease loggers stay at WARN.
			{"name": "kea-dhcp4", "output_options": []map[string]string{{"output": "stdout"}}, "severity": "INFO"},
			quiet("kea-dhcp4.leases"), quiet("kea-dhcp4.packets"), quiet("kea-dhcp4.options"),
		},
	}}
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "kea-dhcp4.conf")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	log := &syncbuf.Buffer{}
	cmd := ns.Command("kea-dhcp4", "-c", path)
	cmd.Env = append(os.Environ(), "KEA_PIDFILE_DIR="+dir, "KEA_LOCKFILE_DIR="+dir)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("kea-dhcp4 in %s: %v", ns.Name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("kea-dhcp4:\n%s", log.String())
		}
	})
	deadline := time.After(30 * time.Second)
	for !strings.Contains(log.String(), "DHCP4_STARTED") {
		select {
		case <-exited:
			t.Fatalf("kea-dhcp4 exited before it served:\n%s", log.String())
		case <-deadline:
			t.Fatalf("kea-dhcp4 did not start in 30 s:\n%s", log.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return log
}
