package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/fleet"
	"github.com/amtsim/amtsim/internal/netns"
	"github.com/amtsim/amtsim/internal/syncbuf"
	"github.com/amtsim/amtsim/nic"
	"github.com/amtsim/amtsim/scs"
)

// mainEnv makes the test binary run as the amtsim command itself, so that
// a test can start `amtsim …` as a process of its own.
const mainEnv = "AMTSIM_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		ctx, stop := signalContext()
		code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// The whole flow off the embedded LAN: devices on a TAP in a network
// namespace; dnsmasq there serving DHCP (option 15) and DNS
// (ProvisionServer.<domain>); `amtsim scs` there as a process of its own,
// with the profile `amtsim scs --print-profile` wrote and one field changed
// (accept_non_secure). Every device ends provisioned under the domain
// dnsmasq gave it, the SCS's database (read after it exits) has each
// device's new PID/PPS and certificate, and amttool logs in as the admin
// both ways the README shows: TLS on 16993 trusting the SCS's CA, and
// plain 16992, left open by the profile.
func TestFleetOnTAPWithSCSProcess(t *testing.T) {
	netns.Need(t, "dnsmasq", "curl", "amttool")
	const (
		n      = 20
		seed   = 31
		domain = "amtsim.test"
		router = "198.19.253.1"
	)
	ns := netns.New(t)
	tap := ns.TAP(t, "amt0", router+"/24")
	netns.Run(t, "ip", "-n", ns.Name, "link", "set", "lo", "up")
	dir := t.TempDir()
	dnsLog := ns.Dnsmasq(t, netns.DnsmasqOptions{Interface: "amt0", Range: "198.19.253.100,198.19.253.200,255.255.255.0,1h",
		Domain: domain, Hosts: []string{"ProvisionServer." + domain + "," + router}})

	// amtsim scs, a process of its own in the namespace.
	self, err := os.Executable()
	require.NoError(t, err)
	dbPath := filepath.Join(dir, "scs.db")
	code, printed, stderr := amtsim(t, "scs", "--print-profile")
	require.Equal(t, exitOK, code, stderr)
	var pf scs.ProfileFile
	require.NoError(t, json.Unmarshal([]byte(printed), &pf))
	assert.Empty(t, pf.Domain, "by default each device keeps its own domain")
	pf.AcceptNonSecure = true
	profilePath := filepath.Join(dir, "profile.json")
	b, err := json.Marshal(pf)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(profilePath, b, 0o600))
	scsCmd := ns.Command(self, "scs", "--listen", router+":9971", "--db", dbPath, "--generate", fmt.Sprintf("%d:0:%d", seed, n),
		"--mebx-password", defaultMEBxPassword, "--profile", profilePath, "--metrics", "127.0.0.1:9390", "--log-format", "json")
	scsCmd.Env = append(os.Environ(), mainEnv+"=1")
	var scsLog syncbuf.Buffer
	scsCmd.Stdout, scsCmd.Stderr = &scsLog, &scsLog
	require.NoError(t, scsCmd.Start())
	scsDone := make(chan error, 1)
	go func() { scsDone <- scsCmd.Wait() }()
	t.Cleanup(func() {
		_ = scsCmd.Process.Kill()
		if t.Failed() {
			t.Logf("amtsim scs:\n%s\ndnsmasq:\n%s", scsLog.String(), dnsLog.String())
		}
	})
	require.Eventually(t, func() bool { return strings.Contains(scsLog.String(), "scs.listening") }, 20*time.Second, 20*time.Millisecond)

	stacks := nic.NewStacks(nic.StackOptions{})
	t.Cleanup(stacks.Close)
	f, err := fleet.New(context.Background(), fleet.Options{Devices: n, Seed: seed, Uplink: tap, Stacks: stacks, Password: defaultMEBxPassword})
	require.NoError(t, err)
	t.Cleanup(f.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, f.Start(ctx))
	require.NoError(t, f.Wait(ctx), "fleet: %+v", f.Summary())
	if u := f.Summary().Uplink; assert.NotNil(t, u, "a TAP counts what it carried") {
		assert.Equal(t, "tap:amt0", u.Uplink)
		assert.Greater(t, u.TxFrames, uint64(n*20), "frames of %d provisionings", n)
		assert.Greater(t, u.RxFrames, uint64(n*20))
		assert.Zero(t, u.ReadErrors+u.WriteErrors+u.DuplicateMACs, "%+v", *u)
	}

	// The SCS's metrics, scraped from inside the namespace.
	require.Eventually(t, func() bool {
		out, err := ns.Exec("curl", "-s", "http://127.0.0.1:9390/metrics")
		return err == nil && strings.Contains(out, fmt.Sprintf(`amtsim_scs_sessions_total{outcome="provisioned",step=""} %d`, n))
	}, 30*time.Second, 50*time.Millisecond, "the SCS verified every device")
	out, err := ns.Exec("curl", "-s", "http://127.0.0.1:9390/metrics")
	require.NoError(t, err)
	assert.Contains(t, out, `amtsim_scs_step_duration_seconds_bucket{step="commit"`)
	assert.Contains(t, out, `amtsim_scs_hellos_total{result="accepted"}`)

	// amttool as the README shows it: the device by name (here from the
	// namespace's hosts file, as a DNS server would give it), as admin.
	st, err := f.Devices()[0].Settings()
	require.NoError(t, err)
	assert.Equal(t, domain, st.DomainName, "the device kept the domain dnsmasq gave it")
	fqdn := st.HostName + "." + domain
	hostsDir := filepath.Join("/etc/netns", ns.Name)
	require.NoError(t, os.MkdirAll(hostsDir, 0o755))
	t.Cleanup(func() { _ = os.RemoveAll(hostsDir) })
	require.NoError(t, os.WriteFile(filepath.Join(hostsDir, "hosts"), []byte(f.Devices()[0].Addr().String()+" "+fqdn+"\n"), 0o644))
	amttool := func(env []string, target string) (string, error) {
		cmd := ns.Command(append([]string{"env", "AMT_PASSWORD=" + pf.AdminPassword}, append(env, "amttool", target, "info")...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err = amttool([]string{"PERL_LWP_SSL_CA_FILE=" + filepath.Join(dir, "ca.crt")}, fqdn+":16993")
	require.NoError(t, err, "%s", out)
	assert.Contains(t, out, "AMT version:  5.", "amttool over TLS 1.0 on 16993")
	assert.Contains(t, out, "Hostname:     "+fqdn)
	out, _ = amttool(nil, fqdn+":16993")
	assert.NotContains(t, out, "AMT version:", "without the SCS's CA the certificate is not trusted")
	out, err = amttool(nil, fqdn)
	require.NoError(t, err, "%s", out)
	assert.Contains(t, out, "AMT version:  5.", "amttool on plain 16992, kept open by accept_non_secure")

	require.NoError(t, scsCmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-scsDone:
		require.NoError(t, err, "amtsim scs exits 0 on SIGTERM")
	case <-time.After(20 * time.Second):
		t.Fatal("amtsim scs did not stop")
	}
	db, err := scs.OpenDB(dbPath)
	require.NoError(t, err)
	defer db.Close()
	for i, d := range f.Devices() {
		st, err := d.Settings()
		require.NoError(t, err)
		r, ok := db.Get(st.PID)
		require.True(t, ok, "device %d's PID %s in the SCS database", i, st.PID)
		assert.Equal(t, scs.StateProvisioned, r.State)
		assert.Equal(t, st.PPS, r.PPS)
		assert.NotEqual(t, f.Identities()[i].PID, st.PID)
		assert.NotEmpty(t, r.CertSerial)
		assert.Contains(t, r.Addr, "198.19.253.", "leased from dnsmasq")
		assert.Equal(t, domain, r.Domain, "the certificate names the device's own domain")
	}
	assert.Contains(t, dnsLog.String(), "DHCPACK(amt0)")
}
