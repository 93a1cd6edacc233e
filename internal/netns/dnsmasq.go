package netns

import (
	"path/filepath"
	"testing"

	"github.com/amtsim/amtsim/internal/syncbuf"
)

// DnsmasqOptions say what dnsmasq serves in a test's namespace: what a
// site's DHCP and DNS server gives AMT devices.
type DnsmasqOptions struct {
	Interface string // the kernel side: a TAP or bridge with the router's address
	// Range is the dhcp-range value: "FIRST,LAST,NETMASK,LEASE".
	Range  string
	Domain string // the DHCP domain (option 15)
	// Hosts are host-record values, "NAME,ADDR" (ProvisionServer.<domain>).
	Hosts []string
	// Router, if set, is offered as option 3.
	Router string
	// Extra flags, as dnsmasq spells them (--log-dhcp, --log-queries).
	Extra []string
}

// Dnsmasq runs dnsmasq in the namespace until the test ends and returns
// its log, which is printed if the test fails. It does no ping before an
// offer (a fleet's DISCOVERs arrive at once, and dnsmasq's 3 s ping checks
// would hold them up) and reads no host files or resolvers.
func (ns *NS) Dnsmasq(t testing.TB, o DnsmasqOptions) *syncbuf.Buffer {
	t.Helper()
	Need(t, "dnsmasq")
	dir := t.TempDir()
	args := []string{"dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--user=root",
		"--interface=" + o.Interface, "--bind-interfaces", "--except-interface=lo",
		"--dhcp-range=" + o.Range,
		"--dhcp-leasefile=" + filepath.Join(dir, "leases"), "--pid-file=" + filepath.Join(dir, "pid"),
		"--domain=" + o.Domain, "--no-ping", "--no-resolv", "--no-hosts", "--log-facility=-"}
	if o.Router != "" {
		args = append(args, "--dhcp-option=option:router,"+o.Router)
	}
	for _, h := range o.Hosts {
		args = append(args, "--host-record="+h)
	}
	args = append(args, o.Extra...)
	log := &syncbuf.Buffer{}
	cmd := ns.Command(args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("dnsmasq in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("dnsmasq:\n%s", log.String())
		}
	})
	return log
}
