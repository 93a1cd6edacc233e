package firmware

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/digest"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/peer"
	"github.com/amtsim/amtsim/lan"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
	"github.com/amtsim/amtsim/scs"
	"github.com/amtsim/amtsim/tlspsk"
	"github.com/amtsim/amtsim/wsman"
)

// testCA is a certificate authority made in the test with crypto/x509.
type testCA struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "amtsim test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func (ca *testCA) certify(pub *rsa.PublicKey, host, domain string) ([]byte, error) {
	name := host + "." + domain
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	return x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
}

// provisioningRig is a device in setup on the embedded LAN with a file
// store, a Hello listener at the SCS address, and a peer host the test
// connects from.
type provisioningRig struct {
	n      *lan.Network
	stacks *nic.Stacks
	id     identity.Identity
	st     *mebx.FileStore
	d      *testDevice
	hellos *helloServer
	peer   *nic.Host
}

func newRig(t *testing.T, index int) *provisioningRig {
	t.Helper()
	// ×100: Hello slots 120 ms apart in real time, and the SCS's time
	// exchange well inside AMT's window.
	return newRigClock(t, index, clock.Scaled(100))
}

// newRigClock is newRig with the device on clk (clock.Real for what must
// keep wall time, as Kerberos does).
func newRigClock(t *testing.T, index int, clk clock.Clock) *provisioningRig {
	t.Helper()
	n, stacks := startLAN(t, lan.NetworkOptions{})
	r := &provisioningRig{n: n, stacks: stacks}
	r.hellos = startHelloServer(t, n, nil, nil, netip.PrefixFrom(n.SCS(), n.Subnet().Bits()), mebx.DefaultSCSPort)
	r.id, _ = identity.Of(50, 0, index)
	r.st = mebx.NewFileStore(filepath.Join(t.TempDir(), "mebx.json"))
	r.d = bootDevice(t, Options{Uplink: n.Segment, Stacks: stacks, Store: r.st, Clock: clk}, r.id, setupSettings(t, r.id))
	r.hellos.next(t, 10*time.Second)
	peer, err := n.AddHost(net.HardwareAddr{0x02, 0xa0, 0, 0, 0, 0x44}, netip.MustParsePrefix("198.18.0.44/15"), nil)
	require.NoError(t, err)
	r.peer = peer
	return r
}

func (r *provisioningRig) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return r.peer.DialContext(ctx, network, addr)
}

func (r *provisioningRig) target(noTLS bool) scs.Target {
	return scs.Target{Addr: r.d.Addr().String(), Dial: r.dial, PID: r.id.PID, PPS: r.id.PPS, Password: testPassword, NoTLS: noTLS}
}

// forward makes the device's port reachable from the kernel's loopback, for
// tools that open their own sockets (openssl, curl).
func (r *provisioningRig) forward(t *testing.T, port uint16) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := r.peer.DialTCP(context.Background(), netip.AddrPortFrom(r.d.Addr(), port))
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c); up.Close() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	return ln.Addr().String()
}

// provisionPlain provisions the rig's device over plain 16992 (no TLS)
// with the test profile and a new PID/PPS from (51, 0, index), and waits
// for the re-armed ports.
func (r *provisioningRig) provisionPlain(t *testing.T, index int) (*scs.Result, identity.Identity) {
	t.Helper()
	newID, _ := identity.Of(51, 0, index)
	p := profile(t, newTestCA(t), newID)
	p.Certify, p.Key = nil, nil
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := scs.Provision(ctx, r.target(true), p, nil)
	require.NoError(t, err)
	r.d.ev.wait(t, "amt.listening", 2, 10*time.Second)
	return res, newID
}

// wsmanAs is a WS-MAN client on 16992 logged in as user.
func (r *provisioningRig) wsmanAs(user, password string) *wsman.Client {
	c := &digest.Client{Username: user, Password: password}
	return &wsman.Client{HTTP: &http.Client{Transport: &digest.Transport{Client: c, Base: &http.Transport{DialContext: r.dial}}},
		URL: "http://" + netip.AddrPortFrom(r.d.Addr(), PortHTTP).String() + "/wsman"}
}

func profile(t *testing.T, ca *testCA, newID identity.Identity) scs.Profile {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	return scs.Profile{
		NewPID: newID.PID, NewPPS: newID.PPS,
		NewMEBxPassword: "Mebx-Pass2!",
		AdminUser:       "admin", AdminPassword: "Admin-Pass3!",
		Users: []scs.User{
			{Name: "operator", Password: "Oper-Pass4!", Access: 2, Realms: []uint32{3, 5, 7}},
			{KerberosSID: "AQUAAAAAAAUVAAAA8LfOQ8Y3ZGpE5cFuUAQAAA==", Access: 2, Realms: []uint32{3}},
		},
		HostName: "optiplex-42", DomainName: "amtsim.example",
		Key: key, Certify: ca.certify,
		Kerberos: &scs.Kerberos{Realm: "AMTSIM.EXAMPLE", KeyVersion: 2, Encryption: 0, MasterKey: make([]byte, 16), MaxClockSkew: 5},
	}
}

// The whole provisioning over the device's real listeners: TLS-PSK on
// 16993, Digest as admin with the MEBx password, every setting, commit.
// Then the device is provisioned, stays so across a power cycle, serves the
// installed certificate (to crypto/tls and openssl s_client), refuses the
// old PSK, takes the new credentials, and sends no more Hellos.
func TestProvisionOverTLSPSK(t *testing.T) {
	r := newRig(t, 1)
	ca := newTestCA(t)
	newID, _ := identity.Of(51, 0, 1)
	p := profile(t, ca, newID)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var steps []string
	res, err := scs.Provision(ctx, r.target(false), p, func(s scs.StepResult) { steps = append(steps, s.Step) })
	require.NoError(t, err, "steps: %v", steps)
	assert.Equal(t, []string{"login", "set-pid-pps", "set-mebx-password", "set-admin", "add-users", "set-time", "set-names",
		"set-kerberos", "install-certificate", "enable-tls", "commit"}, steps)
	assert.Equal(t, r.d.realm, res.Realm)
	assert.Regexp(t, `^Digest:[0-9A-F]{32}$`, res.Realm)
	assert.Equal(t, FirmwareVersion, res.Version)
	r.d.ev.wait(t, "provisioned", 1, 10*time.Second)
	r.d.ev.wait(t, "hello.off", 1, 10*time.Second)
	for _, e := range r.d.ev.snapshot() {
		assert.NotEqual(t, slog.LevelWarn, e.Name.Level(), "a provisioning without faults reports no warning: %s %v", e.Name, e.Attrs)
	}

	// Persisted, whole.
	check := func(s mebx.Settings) {
		t.Helper()
		assert.Equal(t, mebx.StatePost, s.State)
		assert.Equal(t, newID.PID, s.PID)
		assert.Equal(t, newID.PPS, s.PPS)
		assert.Equal(t, "Mebx-Pass2!", s.Password)
		assert.Equal(t, "optiplex-42", s.HostName)
		assert.Equal(t, "amtsim.example", s.DomainName)
		assert.Equal(t, "admin", s.AMT.AdminName)
		assert.Equal(t, digest.HA1("admin", res.Realm, "Admin-Pass3!"), s.AMT.AdminHA1)
		require.Len(t, s.AMT.Users, 2)
		assert.Equal(t, "operator", s.AMT.Users[0].Name)
		assert.Equal(t, []uint32{3, 5, 7}, s.AMT.Users[0].Realms)
		assert.Equal(t, "AQUAAAAAAAUVAAAA8LfOQ8Y3ZGpE5cFuUAQAAA==", s.AMT.Users[1].KerberosSID)
		assert.True(t, s.AMT.TLSEnabled)
		assert.True(t, s.AMT.TimeSet)
		assert.True(t, s.AMT.KerberosEnabled)
		assert.Equal(t, "AMTSIM.EXAMPLE", s.AMT.KerberosRealm)
		require.NotNil(t, s.AMT.Audit)
		assert.True(t, s.AMT.Audit.TLS)
		assert.Contains(t, s.AMT.Audit.Peer, "198.18.0.44:")
	}
	stored, err := r.st.Load()
	require.NoError(t, err)
	check(stored)

	// No Hello after the commit: at ×100 several slots would have come due.
	hellosAtCommit := r.d.Stats.HellosSent.Load()
	time.Sleep(500 * time.Millisecond)
	assert.Equal(t, hellosAtCommit, r.d.Stats.HellosSent.Load(), "the Hello loop has stopped")

	// A power cycle keeps it all.
	r.d.PowerOff()
	require.NoError(t, r.d.PowerOn(context.Background()))
	r.d.ev.wait(t, "amt.listening", 3, 10*time.Second)
	check(r.d.current())
	assert.Equal(t, hellosAtCommit, r.d.Stats.HellosSent.Load(), "no Hello after the power cycle either")

	// 16993 serves the installed certificate: crypto/tls…
	raw, err := r.dial(ctx, "tcp", netip.AddrPortFrom(r.d.Addr(), PortHTTPS).String())
	require.NoError(t, err)
	tc := tls.Client(raw, &tls.Config{RootCAs: ca.pool, ServerName: "optiplex-42.amtsim.example", MinVersion: tls.VersionTLS10,
		CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}})
	require.NoError(t, tc.HandshakeContext(ctx))
	st := tc.ConnectionState()
	assert.Equal(t, uint16(tls.VersionTLS10), st.Version, "AMT 5 speaks TLS 1.0")
	assert.Equal(t, res.CertDER, st.PeerCertificates[0].Raw)
	tc.Close()
	// …and openssl s_client.
	t.Run("openssl", func(t *testing.T) {
		peer.Need(t, "openssl")
		addr := r.forward(t, PortHTTPS)
		caFile := filepath.Join(t.TempDir(), "ca.pem")
		require.NoError(t, writePEM(caFile, ca.cert.Raw))
		cmd := exec.Command("openssl", "s_client", "-connect", addr, "-tls1", "-cipher", "AES128-SHA@SECLEVEL=0",
			"-CAfile", caFile, "-verify_return_error", "-verify_hostname", "optiplex-42.amtsim.example", "-showcerts")
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.Contains(t, string(out), "Verify return code: 0 (ok)")
		assert.Contains(t, string(out), "subject=CN = optiplex-42.amtsim.example")
	})

	// The old PSK no longer opens anything.
	raw, err = r.dial(ctx, "tcp", netip.AddrPortFrom(r.d.Addr(), PortHTTPS).String())
	require.NoError(t, err)
	pc := tlspsk.Client(raw, &tlspsk.Config{MaxVersion: tlspsk.VersionTLS10, Identity: r.id.PID, Key: tlspsk.AMTKey(r.id.PPS)})
	assert.Error(t, pc.Handshake(ctx), "TLS-PSK with the old PID/PPS")
	pc.Close()

	// The new admin credentials work; the old MEBx password does not.
	op := scs.OpenOperational(r.target(false), ca.pool, "optiplex-42.amtsim.example", "admin", "Admin-Pass3!")
	gs, err := op.WSMAN.Get(ctx, wsman.AMTSchema+"AMT_GeneralSettings", nil)
	require.NoError(t, err)
	host, _ := gs.Get("HostName")
	assert.Equal(t, "optiplex-42", host)
	sc, err := op.WSMAN.Get(ctx, wsman.AMTSchema+"AMT_SetupAndConfigurationService", nil)
	require.NoError(t, err)
	state, _ := sc.Get("ProvisioningState")
	assert.Equal(t, "2", state)
	// Provisioning calls are refused now.
	out2, err := op.WSMAN.Invoke(ctx, wsman.AMTSchema+"AMT_SetupAndConfigurationService", "SetTLSPSK", nil,
		(&wsman.Instance{}).Set("PID", newID.PID).Set("PPS", newID.PPS))
	require.NoError(t, err)
	rv, _ := out2.Get("ReturnValue")
	assert.Equal(t, "32", rv, "INVALID_PROVISIONING_STATE")
	op.Close()
	user := scs.OpenOperational(r.target(false), ca.pool, "optiplex-42.amtsim.example", "operator", "Oper-Pass4!")
	_, err = user.WSMAN.Get(ctx, wsman.AMTSchema+"AMT_GeneralSettings", nil)
	require.NoError(t, err, "the Digest user logs in")
	_, err = user.WSMAN.Invoke(ctx, wsman.AMTSchema+"AMT_AuthorizationService", "GetAdminAclEntry", nil, nil)
	var fault *wsman.Fault
	require.ErrorAs(t, err, &fault, "a user may not read the admin entry")
	assert.Equal(t, "c:AccessDenied", fault.Subcode)
	user.Close()
	old := scs.OpenOperational(r.target(false), ca.pool, "optiplex-42.amtsim.example", "admin", testPassword)
	_, err = old.WSMAN.Get(ctx, wsman.AMTSchema+"AMT_GeneralSettings", nil)
	assert.ErrorContains(t, err, "401")
	old.Close()
}

func writePEM(path string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
}

// The same provisioning without TLS: Digest on plain 16992. Afterwards 16992
// stays the way in (TLS is off) and 16993 is closed.
func TestProvisionOverDigest16992(t *testing.T) {
	r := newRig(t, 2)
	res, newID := r.provisionPlain(t, 2)
	ctx := context.Background()
	stored, err := r.st.Load()
	require.NoError(t, err)
	assert.Equal(t, mebx.StatePost, stored.State)
	assert.False(t, stored.AMT.TLSEnabled)
	assert.False(t, stored.AMT.Audit.TLS)
	assert.Equal(t, newID.PID, stored.PID)

	_, err = r.dial(ctx, "tcp", netip.AddrPortFrom(r.d.Addr(), PortHTTPS).String())
	assert.Error(t, err, "16993 is closed without TLS")
	gs, err := r.wsmanAs("admin", "Admin-Pass3!").Get(ctx, wsman.AMTSchema+"AMT_GeneralSettings", nil)
	require.NoError(t, err)
	realm, _ := gs.Get("DigestRealm")
	assert.Equal(t, res.Realm, realm)
}

// A session cut before CommitChanges leaves the device in setup with its
// old PID/PPS; the Hello loop, held during the session, resumes, and a
// second session provisions the device.
func TestSessionCutBeforeCommit(t *testing.T) {
	r := newRig(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	newID, _ := identity.Of(51, 0, 3)

	s := scs.OpenSetup(r.target(false))
	out, err := s.WSMAN.Invoke(ctx, wsman.AMTSchema+"AMT_SetupAndConfigurationService", "SetTLSPSK", nil,
		(&wsman.Instance{}).Set("PID", newID.PID).Set("PPS", newID.PPS))
	require.NoError(t, err)
	rv, _ := out.Get("ReturnValue")
	require.Equal(t, "0", rv)
	out, err = s.WSMAN.Invoke(ctx, wsman.AMTSchema+"AMT_SetupAndConfigurationService", "SetMEBxPassword", nil,
		(&wsman.Instance{}).Set("Password", "Other-Pass5!"))
	require.NoError(t, err)
	rv, _ = out.Get("ReturnValue")
	require.Equal(t, "0", rv)
	// A weak password is refused with the password status.
	out, err = s.WSMAN.Invoke(ctx, wsman.AMTSchema+"AMT_SetupAndConfigurationService", "SetMEBxPassword", nil,
		(&wsman.Instance{}).Set("Password", "weak"))
	require.NoError(t, err)
	rv, _ = out.Get("ReturnValue")
	assert.Equal(t, "2054", rv, "INVALID_PASSWORD (0x806)")
	// Bad PID and PPS formats.
	out, err = s.WSMAN.Invoke(ctx, wsman.AMTSchema+"AMT_SetupAndConfigurationService", "SetTLSPSK", nil,
		(&wsman.Instance{}).Set("PID", "XXXX").Set("PPS", newID.PPS))
	require.NoError(t, err)
	rv, _ = out.Get("ReturnValue")
	assert.Equal(t, "42", rv, "INVALID_PID_FORMAT (0x2A)")
	out, err = s.WSMAN.Invoke(ctx, wsman.AMTSchema+"AMT_SetupAndConfigurationService", "SetTLSPSK", nil,
		(&wsman.Instance{}).Set("PID", newID.PID).Set("PPS", "short"))
	require.NoError(t, err)
	rv, _ = out.Get("ReturnValue")
	assert.Equal(t, "43", rv, "INVALID_PPS_FORMAT (0x2B)")

	// While the session lasts no Hello goes out (slots come due every
	// 120 ms in real time).
	held := r.d.Stats.HellosSent.Load()
	time.Sleep(400 * time.Millisecond)
	assert.Equal(t, held, r.d.Stats.HellosSent.Load(), "Hellos are held during a session")

	s.Close() // the SCS goes away before CommitChanges
	r.d.ev.wait(t, "session.discarded", 1, 10*time.Second)
	cur := r.d.current()
	assert.Equal(t, mebx.StateIn, cur.State)
	assert.Equal(t, r.id.PID, cur.PID)
	assert.Equal(t, testPassword, cur.Password)
	stored, err := r.st.Load()
	require.NoError(t, err)
	assert.Equal(t, r.id.PID, stored.PID, "nothing staged was persisted")

	// The Hello loop resumes with the old PID.
	for {
		h := r.hellos.next(t, 10*time.Second)
		if r.d.Stats.HellosSent.Load() > held {
			assert.Equal(t, r.id.PID, h.Message.PID)
			break
		}
	}
	// And a second session succeeds with the old pair.
	res, err := scs.Provision(ctx, r.target(false), profile(t, newTestCA(t), newID), nil)
	require.NoError(t, err)
	assert.True(t, res.Committed)
	assert.Equal(t, mebx.StatePost, r.d.current().State)
}

// Digest on the device: a wrong password, an empty response
// (CVE-2017-5689) and a replayed response are refused with 401; the quirk
// reproduces the CVE on demand.
func TestDeviceDigestRefusals(t *testing.T) {
	r := newRig(t, 4)
	ctx := context.Background()
	url := "/wsman"
	body := string(wsman.Marshal(wsman.Header{Action: wsman.ActionGet, MessageID: "1", ResourceURI: wsman.AMTSchema + "AMT_GeneralSettings"}, ""))
	send := func(authz string) *http.Response {
		t.Helper()
		c, err := r.dial(ctx, "tcp", netip.AddrPortFrom(r.d.Addr(), PortHTTP).String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		req, _ := http.NewRequest(http.MethodPost, "http://device"+url, strings.NewReader(body))
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		require.NoError(t, req.Write(c))
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		assert.Equal(t, ServerHeader, resp.Header.Get("Server"))
		return resp
	}
	first := send("")
	require.Equal(t, http.StatusUnauthorized, first.StatusCode)
	ch := first.Header.Get("WWW-Authenticate")
	assert.Contains(t, ch, `realm="`+r.d.realm+`"`)
	assert.Contains(t, ch, `qop="auth"`)

	good := &digest.Client{Username: "admin", Password: testPassword}
	require.NoError(t, good.Observe(ch))
	h, _ := good.Authorize(http.MethodPost, url)
	assert.Equal(t, http.StatusOK, send(h).StatusCode)
	assert.Equal(t, http.StatusUnauthorized, send(h).StatusCode, "the same response again is a replay")

	bad := &digest.Client{Username: "admin", Password: "Wrong-Pass1!"}
	require.NoError(t, bad.Observe(ch))
	h, _ = bad.Authorize(http.MethodPost, url)
	assert.Equal(t, http.StatusUnauthorized, send(h).StatusCode)

	h, _ = good.Authorize(http.MethodPost, url)
	a, _ := digest.ParseAuthorization(h)
	a.Response = ""
	assert.Equal(t, http.StatusUnauthorized, send(a.String()).StatusCode, "CVE-2017-5689: empty response")
	assert.Equal(t, http.StatusUnauthorized, send("Digest garbage").StatusCode)
	assert.GreaterOrEqual(t, r.d.Stats.AuthFailures.Load(), uint64(4))
	failed := r.d.ev.named("auth.failed")
	for _, e := range failed {
		for _, a := range e.Attrs {
			assert.NotContains(t, a.Value.String(), testPassword, "no secret in events")
		}
	}

	// The opt-in quirk lets the empty response in.
	n, stacks := r.n, r.stacks
	id, _ := identity.Of(50, 0, 40)
	q := bootDevice(t, Options{Uplink: n.Segment, Stacks: stacks, Quirks: Quirks{EmptyDigestResponse: true}}, id, setupSettings(t, id))
	q.ev.wait(t, "amt.listening", 1, 10*time.Second)
	c, err := r.peer.DialTCP(ctx, netip.AddrPortFrom(q.Addr(), PortHTTP))
	require.NoError(t, err)
	defer c.Close()
	br := bufio.NewReader(c)
	req, _ := http.NewRequest(http.MethodPost, "http://device"+url, strings.NewReader(body))
	require.NoError(t, req.Write(c))
	resp, err := http.ReadResponse(br, req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	qc := &digest.Client{Username: "admin", Password: "not the password"}
	require.NoError(t, qc.Observe(resp.Header.Get("WWW-Authenticate")))
	h, _ = qc.Authorize(http.MethodPost, url)
	a, _ = digest.ParseAuthorization(h)
	a.Response = ""
	req, _ = http.NewRequest(http.MethodPost, "http://device"+url, strings.NewReader(body))
	req.Header.Set("Authorization", a.String())
	require.NoError(t, req.Write(c))
	resp, err = http.ReadResponse(br, req)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the quirk reproduces CVE-2017-5689")
}

// Malformed XML gets a SOAP fault and changes nothing.
func TestMalformedWSMANChangesNothing(t *testing.T) {
	r := newRig(t, 5)
	ws := r.wsmanAs("admin", testPassword)
	hc, url := ws.HTTP, ws.URL
	before := r.d.current()
	for _, body := range []string{
		"<not xml", `<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Body>`,
		string(wsman.Marshal(wsman.Header{Action: wsman.AMTSchema + "AMT_SetupAndConfigurationService/SetTLSPSK", MessageID: "9",
			ResourceURI: wsman.AMTSchema + "AMT_SetupAndConfigurationService"}, `<h:SetTLSPSK_INPUT xmlns:h="x"><h:PID>`)),
		string(wsman.Marshal(wsman.Header{Action: wsman.AMTSchema + "AMT_Nothing/Do", MessageID: "9", ResourceURI: wsman.AMTSchema + "AMT_Nothing"}, "")),
	} {
		resp, err := hc.Post(url, wsman.ContentType, strings.NewReader(body))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
		env, err := wsman.ParseEnvelope(b)
		require.NoError(t, err, "%s", b)
		assert.Equal(t, "Fault", env.Body.Name.Local, "%s", b)
	}
	// The EOI services too: a SOAP 1.1 fault, HTTP 500, nothing applied.
	eoiURL := strings.TrimSuffix(url, "/wsman") + "/SecurityAdministrationService"
	for _, body := range []string{"<not xml", `<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><SetTLSPSK>`} {
		resp, err := hc.Post(eoiURL, "text/xml", strings.NewReader(body))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
		assert.Contains(t, string(b), "<faultcode>SOAP-ENV:Client</faultcode>")
	}
	assert.Equal(t, before.PID, r.d.current().PID)
	assert.Equal(t, before.FlashWrites, r.d.current().FlashWrites)
	assert.GreaterOrEqual(t, r.d.Stats.BadRequests.Load(), uint64(5), "each unreadable request counted")
}

// Requests the web server cannot read get 400 (413 for a body over AMT's
// limit), are counted, and end the connection; the device keeps serving.
func TestDeviceBadHTTP(t *testing.T) {
	r := newRig(t, 6)
	ctx := context.Background()
	for raw, want := range map[string]int{
		"GET / HTTP/9.9\r\n\r\n": http.StatusBadRequest,
		"POST /wsman HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n": http.StatusBadRequest,
		"POST /wsman HTTP/1.1\r\nContent-Length: 999999\r\n\r\n":                                   http.StatusRequestEntityTooLarge,
	} {
		c, err := r.dial(ctx, "tcp", netip.AddrPortFrom(r.d.Addr(), PortHTTP).String())
		require.NoError(t, err)
		_, err = io.WriteString(c, raw)
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err, "%q", raw)
		assert.Equal(t, want, resp.StatusCode, "%q", raw)
		assert.True(t, resp.Close, "the device closes after a request it cannot read")
		c.Close()
	}
	assert.Equal(t, uint64(3), r.d.Stats.BadRequests.Load())
	assert.Len(t, r.d.ev.named("http.bad_request"), 3)

	// A good request is still served.
	ws := r.wsmanAs("admin", testPassword)
	resp, err := ws.HTTP.Post(ws.URL, wsman.ContentType, strings.NewReader(string(wsman.Marshal(
		wsman.Header{Action: wsman.ActionGet, MessageID: "1", ResourceURI: wsman.AMTSchema + "AMT_GeneralSettings"}, ""))))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}

// PowerOff ends the sessions still open (a client's kept-alive connection)
// and returns only after they are over: nothing happens after power.off.
func TestPowerOffEndsSessions(t *testing.T) {
	r := newRig(t, 7)
	ws := r.wsmanAs("admin", testPassword)
	resp, err := ws.HTTP.Post(ws.URL, wsman.ContentType, strings.NewReader(string(wsman.Marshal(
		wsman.Header{Action: wsman.ActionGet, MessageID: "1", ResourceURI: wsman.AMTSchema + "AMT_GeneralSettings"}, ""))))
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Len(t, r.d.ev.named("session.login"), 1)
	require.Empty(t, r.d.ev.named("session.closed"), "the client keeps its connection")

	r.d.PowerOff()
	names := r.d.ev.names()
	require.NotEmpty(t, names)
	assert.Equal(t, "power.off", names[len(names)-1])
	assert.Contains(t, names, "session.closed", "the open session ended before power.off")
}
