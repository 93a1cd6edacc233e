package firmware

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/digest"
	"github.com/amtsim/amtsim/eoi"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/peer"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/ptstatus"
	"github.com/amtsim/amtsim/wsman"
)

// eoiClient calls a device's EOI services on 16992 as a management tool of
// that era does.
type eoiClient struct {
	t    *testing.T
	hc   *http.Client
	base string
}

func (r *provisioningRig) eoiAs(t *testing.T, user, password string) *eoiClient {
	c := &digest.Client{Username: user, Password: password}
	return &eoiClient{t: t, hc: &http.Client{Transport: &digest.Transport{Client: c, Base: &http.Transport{DialContext: r.dial}}},
		base: "http://" + netip.AddrPortFrom(r.d.Addr(), PortHTTP).String()}
}

// call returns the status and the answer element; a fault fails the test.
func (c *eoiClient) call(service, method string, params ...eoi.Field) (ptstatus.Code, *wsman.Node) {
	c.t.Helper()
	resp, err := c.hc.Post(c.base+eoi.Path(service), "text/xml; charset=utf-8", bytes.NewReader(eoi.Call(service, method, params)))
	require.NoError(c.t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(c.t, http.StatusOK, resp.StatusCode, "%s.%s: %s", service, method, b)
	st, n, err := eoi.ParseResponse(b)
	require.NoError(c.t, err, "%s", b)
	return ptstatus.Code(st), n
}

// The legacy SOAP services answer a provisioned device's admin and users
// with the firmware's status codes, and PartialUnprovision takes the
// device back to setup, where it Hellos again.
func TestEOIServices(t *testing.T) {
	r := newRig(t, 6)
	res, newID := r.provisionPlain(t, 6)

	a := r.eoiAs(t, "admin", "Admin-Pass3!")
	st, n := a.call(eoi.GeneralInfo, "GetCoreVersion")
	assert.Equal(t, ptstatus.Success, st)
	assert.Equal(t, FirmwareVersion, n.Value("Version"))
	st, n = a.call(eoi.SecurityAdministration, "GetDigestRealm")
	assert.Equal(t, ptstatus.Success, st)
	assert.Equal(t, res.Realm, n.Value("DigestRealm"))
	st, n = a.call(eoi.GeneralInfo, "GetProvisioningState")
	assert.Equal(t, ptstatus.Success, st)
	assert.Equal(t, "2", n.Value("ProvisioningState"))
	_, n = a.call(eoi.NetworkAdministration, "GetHostName")
	assert.Equal(t, "optiplex-42", n.Value("HostName"))
	_, n = a.call(eoi.NetworkAdministration, "EnumerateInterfaces")
	assert.Equal(t, "0", n.Value("InterfaceHandles"))
	st, n = a.call(eoi.NetworkAdministration, "GetInterfaceSettings", eoi.F("InterfaceHandle", "0"))
	require.Equal(t, ptstatus.Success, st)
	ip4 := r.d.Addr().As4()
	want := uint64(ip4[0])<<24 | uint64(ip4[1])<<16 | uint64(ip4[2])<<8 | uint64(ip4[3])
	assert.Equal(t, strconv.FormatUint(want, 10), n.Child("InterfaceDescriptor").Child("IPv4Parameters").Value("LocalAddress"))
	st, _ = a.call(eoi.NetworkAdministration, "GetInterfaceSettings", eoi.F("InterfaceHandle", "7"))
	assert.Equal(t, ptstatus.InvalidIndex, st)
	st, n = a.call(eoi.NetworkTime, "GetLowAccuracyTimeSynch")
	assert.Equal(t, ptstatus.Success, st)
	ta0, _ := strconv.ParseInt(n.Value("Ta0"), 10, 64)
	assert.InDelta(t, time.Now().Unix(), ta0, 120, "AMT's clock was set to the SCS's")

	// Remote control of the host's power.
	_, n = a.call(eoi.RemoteControl, "GetSystemPowerState")
	assert.Equal(t, "0", n.Value("SystemPowerState"))
	st, _ = a.call(eoi.RemoteControl, "RemoteControl", eoi.F("Command", "18"), eoi.F("IanaOemNumber", "343"))
	assert.Equal(t, ptstatus.Success, st)
	_, n = a.call(eoi.RemoteControl, "GetSystemPowerState")
	assert.Equal(t, "5", n.Value("SystemPowerState"))
	st, _ = a.call(eoi.RemoteControl, "RemoteControl", eoi.F("Command", "18"), eoi.F("IanaOemNumber", "343"))
	assert.Equal(t, ptstatus.NotPermitted, st, "already off")
	st, _ = a.call(eoi.RemoteControl, "RemoteControl", eoi.F("Command", "17"), eoi.F("IanaOemNumber", "99"))
	assert.Equal(t, ptstatus.InvalidParameter, st)
	st, _ = a.call(eoi.RemoteControl, "RemoteControl", eoi.F("Command", "17"), eoi.F("IanaOemNumber", "343"))
	assert.Equal(t, ptstatus.Success, st)
	// A power cycle restarts the boot sequence and keeps the settings.
	listening := len(r.d.ev.named("amt.listening"))
	st, _ = a.call(eoi.RemoteControl, "RemoteControl", eoi.F("Command", "19"), eoi.F("IanaOemNumber", "343"))
	assert.Equal(t, ptstatus.Success, st)
	r.d.ev.wait(t, "power.cycle", 1, 10*time.Second)
	r.d.ev.wait(t, "amt.listening", listening+1, 10*time.Second)
	assert.Equal(t, mebx.StatePost, r.d.current().State)
	assert.Equal(t, uint64(2), r.d.Stats.PowerOns.Load())

	// Provisioning calls outside setup.
	st, _ = a.call(eoi.SecurityAdministration, "SetTLSPSK", eoi.F("PID", newID.PID), eoi.F("PPS", newID.PPS))
	assert.Equal(t, ptstatus.InvalidProvisioningState, st)
	st, _ = a.call(eoi.SecurityAdministration, "CommitChanges")
	assert.Equal(t, ptstatus.InvalidProvisioningState, st)

	// An unknown method is a SOAP fault with a body, not a bare 500.
	resp, err := a.hc.Post(a.base+eoi.Path(eoi.GeneralInfo), "text/xml", bytes.NewReader(eoi.Call(eoi.GeneralInfo, "Frobnicate", nil)))
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	_, _, err = eoi.ParseResponse(b)
	assert.ErrorContains(t, err, "Frobnicate")

	// A user may read but not administer.
	u := r.eoiAs(t, "operator", "Oper-Pass4!")
	st, _ = u.call(eoi.GeneralInfo, "GetCoreVersion")
	assert.Equal(t, ptstatus.Success, st)
	st, _ = u.call(eoi.SecurityAdministration, "GetDigestRealm")
	assert.Equal(t, ptstatus.NotPermitted, st)

	// Partial unprovision: back to setup with PID/PPS and the admin ACL
	// kept; the Hello loop starts again with the PID the SCS set.
	st, _ = a.call(eoi.SecurityAdministration, "PartialUnprovision")
	require.Equal(t, ptstatus.Success, st)
	r.d.ev.wait(t, "unprovisioned", 1, 10*time.Second)
	cur := r.d.current()
	assert.Equal(t, mebx.StateIn, cur.State)
	assert.Equal(t, newID.PID, cur.PID)
	assert.Equal(t, "admin", cur.AMT.AdminName)
	assert.Empty(t, cur.AMT.Users)
	assert.Equal(t, "optiplex-42", cur.HostName)
	for {
		h := r.hellos.next(t, 10*time.Second)
		if h.Message.PID == newID.PID {
			break
		}
	}
	stored, err := r.st.Load()
	require.NoError(t, err)
	assert.Equal(t, mebx.StateIn, stored.State)
}

// Full unprovision over WS-MAN: factory settings (the MEBx password kept),
// no PID, and so, with remote configuration on as from the factory, the
// PKI Hello instead of the PSK one.
func TestFullUnprovision(t *testing.T) {
	r := newRig(t, 7)
	r.provisionPlain(t, 7)
	ctx := context.Background()
	out, err := r.wsmanAs("admin", "Admin-Pass3!").Invoke(ctx, wsman.AMTSchema+"AMT_SetupAndConfigurationService", "Unprovision", nil, (&wsman.Instance{}).Set("ProvisioningMode", "1"))
	require.NoError(t, err)
	rv, _ := out.Get("ReturnValue")
	require.Equal(t, "0", rv)
	r.d.ev.wait(t, "unprovisioned", 1, 10*time.Second)
	// PSK Hellos before the commit; after this, the PKI one.
	for n := 1; ; n++ {
		sent := r.d.ev.wait(t, "hello.sent", n, 10*time.Second)
		if v, _ := sent[n-1].Attr("version"); v.String() == "PKI" {
			break
		}
	}
	stored, err := r.st.Load()
	require.NoError(t, err)
	assert.Equal(t, mebx.StatePre, stored.State)
	assert.Empty(t, stored.PID)
	assert.Empty(t, stored.AMT.AdminName)
	assert.Equal(t, "Mebx-Pass2!", stored.Password, "the MEBx password is untouched")
}

// GenerateKeyPair makes a real RSA-2048 key by default; a KeyPool makes
// its keys once and hands them out in turn.
func TestGenerateKeyPair(t *testing.T) {
	pool := KeyPool(2)
	k1, err := pool()
	require.NoError(t, err)
	k2, _ := pool()
	k3, _ := pool()
	assert.Equal(t, 2048, k1.Key.N.BitLen())
	assert.False(t, k1.Key.Equal(k2.Key))
	assert.True(t, k3.Key.Equal(k1.Key), "the third key is the first again")
	assert.Same(t, k1, k3, "the pool encodes each key once")

	r := newRig(t, 8)
	ctx := context.Background()
	ws := r.wsmanAs("admin", testPassword)
	out, err := ws.Invoke(ctx, wsman.AMTSchema+"AMT_PublicKeyManagementService", "GenerateKeyPair", nil,
		(&wsman.Instance{}).Set("KeyAlgorithm", "0").Set("KeyLength", "2048"))
	require.NoError(t, err)
	rv, _ := out.Get("ReturnValue")
	require.Equal(t, "0", rv)
	ref := out.Ref("KeyPair")
	require.NotNil(t, ref)
	kp, err := ws.Get(ctx, wsman.AMTSchema+"AMT_PublicPrivateKeyPair", ref.Selectors)
	require.NoError(t, err)
	der, _ := kp.Get("DERKey")
	pub, err := x509.ParsePKCS1PublicKey(mustB64(t, der))
	require.NoError(t, err)
	assert.Equal(t, 2048, pub.N.BitLen())
	out, err = ws.Invoke(ctx, wsman.AMTSchema+"AMT_PublicKeyManagementService", "GenerateKeyPair", nil,
		(&wsman.Instance{}).Set("KeyAlgorithm", "0").Set("KeyLength", "1024"))
	require.NoError(t, err)
	rv, _ = out.Get("ReturnValue")
	assert.Equal(t, "36", rv, "INVALID_PARAMETER for anything but RSA-2048")
}

func mustB64(t *testing.T, s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	require.NoError(t, err)
	return b
}

// amttool (amtterm's EOI client, Perl SOAP::Lite with LWP's Digest) works
// unchanged against a provisioned device: info, netinfo and a power
// command, logged in as the admin the SCS set.
func TestAmttool(t *testing.T) {
	peer.Need(t, "amttool")
	r := newRig(t, 9)
	r.provisionPlain(t, 9)
	addr := r.forward(t, PortHTTP)
	amttool := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command("amttool", append([]string{addr}, args...)...)
		cmd.Env = append(os.Environ(), "AMT_PASSWORD=Admin-Pass3!")
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		return string(out)
	}
	out := amttool("", "info")
	assert.Contains(t, out, "AMT version:  "+FirmwareVersion)
	assert.Contains(t, out, "Hostname:     optiplex-42.amtsim.example")
	assert.Contains(t, out, "Powerstate:   S0")
	assert.Contains(t, out, "IanaOemNumber                   157", "343 in hex")
	assert.Contains(t, out, "powercycle powerdown powerup reset")

	out = amttool("", "netinfo")
	assert.Contains(t, out, "Network Interface 0:")
	assert.Regexp(t, `LocalAddress\s+`+regexp.QuoteMeta(r.d.Addr().String()), out)
	assert.Contains(t, out, "DhcpEnabled")

	out = amttool("y\n", "powerdown")
	assert.Contains(t, out, "result: pt_status: success")
	out = amttool("", "info")
	assert.Contains(t, out, "Powerstate:   S5 (soft-off)")
	out = amttool("y\n", "powerdown")
	assert.Contains(t, out, "result: pt_status: not permitted", "already off")

	// amttool does not report a refusal; what it printed and the device's
	// count show it.
	failures := r.d.Stats.AuthFailures.Load()
	cmd := exec.Command("amttool", addr, "info")
	cmd.Env = append(os.Environ(), "AMT_PASSWORD=Wrong-Pass9!")
	b, _ := cmd.CombinedOutput()
	assert.NotContains(t, string(b), "AMT version:  "+FirmwareVersion, "a wrong password gets nothing")
	assert.Greater(t, r.d.Stats.AuthFailures.Load(), failures)
}

// Provisioning through the EOI services alone, as tools of the AMT 2–5 era
// did it: every SecurityAdministration and NetworkTime method docs/protocol.md
// §8 names, then CommitChanges.
func TestProvisionOverEOI(t *testing.T) {
	r := newRig(t, 10)
	ca := newTestCA(t)
	newID, _ := identity.Of(51, 0, 10)
	a := r.eoiAs(t, "admin", testPassword)

	st, n := a.call(eoi.SecurityAdministration, "GetProvisioningMode")
	require.Equal(t, ptstatus.Success, st)
	assert.Equal(t, "1", n.Value("ProvisioningMode"), "enterprise")
	_, n = a.call(eoi.SecurityAdministration, "GetDigestRealm")
	realm := n.Value("DigestRealm")
	require.Equal(t, r.d.realm, realm)

	// PID and PPS as base64, the SDK's binary form.
	st, _ = a.call(eoi.SecurityAdministration, "SetTLSPSK",
		eoi.F("PID", base64.StdEncoding.EncodeToString([]byte(newID.PID))), eoi.F("PPS", base64.StdEncoding.EncodeToString([]byte(newID.PPS))))
	require.Equal(t, ptstatus.Success, st)
	st, _ = a.call(eoi.SecurityAdministration, "SetAdminAclEntryEx", eoi.F("Username", "admin"),
		eoi.F("DigestPassword", digest.DigestPassword("admin", realm, "Admin-Pass3!")))
	require.Equal(t, ptstatus.Success, st)
	st, n = a.call(eoi.SecurityAdministration, "AddUserAclEntryEx", eoi.Field{Name: "EntryEx", Children: []eoi.Field{
		{Name: "DigestEntry", Children: []eoi.Field{eoi.F("Username", "operator"),
			eoi.F("DigestPassword", digest.DigestPassword("operator", realm, "Oper-Pass4!")), eoi.F("AccessPermission", "2"),
			{Name: "Realms", Children: []eoi.Field{eoi.F("RealmEntry", "3"), eoi.F("RealmEntry", "7")}}}}}})
	require.Equal(t, ptstatus.Success, st)
	assert.Equal(t, "1", n.Value("Handle"))
	st, n = a.call(eoi.SecurityAdministration, "AddUserAclEntryEx", eoi.Field{Name: "EntryEx", Children: []eoi.Field{
		{Name: "KerberosEntry", Children: []eoi.Field{eoi.F("Sid", "AQUAAAAAAAUVAAAA8LfOQ8Y3ZGpE5cFuUAQAAA=="), eoi.F("AccessPermission", "1"),
			{Name: "Realms", Children: []eoi.Field{eoi.F("RealmEntry", "3")}}}}}})
	require.Equal(t, ptstatus.Success, st)
	assert.Equal(t, "2", n.Value("Handle"))
	st, _ = a.call(eoi.SecurityAdministration, "AddUserAclEntryEx", eoi.Field{Name: "EntryEx", Children: []eoi.Field{
		{Name: "DigestEntry", Children: []eoi.Field{eoi.F("Username", "operator"),
			eoi.F("DigestPassword", digest.DigestPassword("operator", realm, "x")), eoi.F("AccessPermission", "2")}}}})
	assert.Equal(t, ptstatus.Duplicate, st)

	_, n = a.call(eoi.NetworkTime, "GetLowAccuracyTimeSynch")
	ta0 := n.Value("Ta0")
	now := strconv.FormatInt(time.Now().Unix(), 10)
	st, _ = a.call(eoi.NetworkTime, "SetHighAccuracyTimeSynch", eoi.F("Ta0", ta0), eoi.F("Tm1", now), eoi.F("Tm2", now))
	require.Equal(t, ptstatus.Success, st)
	st, _ = a.call(eoi.NetworkTime, "SetHighAccuracyTimeSynch", eoi.F("Ta0", "1"), eoi.F("Tm1", now), eoi.F("Tm2", now))
	assert.Equal(t, ptstatus.InvalidTime, st, "a Ta0 AMT never gave")

	st, _ = a.call(eoi.SecurityAdministration, "SetTlsEnabled", eoi.F("NetworkTlsEnabled", "true"), eoi.F("LocalTlsEnabled", "false"))
	assert.Equal(t, ptstatus.CertificateNotReady, st, "TLS needs a certificate first")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	cert, err := ca.certify(&key.PublicKey, "optiplex-eoi", "amtsim.example")
	require.NoError(t, err)
	st, _ = a.call(eoi.SecurityAdministration, "SetTLSKeyAndCertificate",
		eoi.F("PrivateKey", base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PrivateKey(key))),
		eoi.Field{Name: "CertificateChain", Children: []eoi.Field{eoi.F("Certificate", base64.StdEncoding.EncodeToString(cert))}})
	require.Equal(t, ptstatus.Success, st)
	st, _ = a.call(eoi.SecurityAdministration, "SetTlsEnabled", eoi.F("NetworkTlsEnabled", "true"), eoi.F("LocalTlsEnabled", "false"))
	require.Equal(t, ptstatus.Success, st)
	st, _ = a.call(eoi.SecurityAdministration, "SetKerberosOptions", eoi.Field{Name: "KerberosOptions", Children: []eoi.Field{
		eoi.F("KerberosRealmName", "AMTSIM.EXAMPLE"), eoi.F("KerberosKeyVersion", "3"), eoi.F("KerberosEncryption", "1"),
		eoi.F("KerberosMasterKey", base64.StdEncoding.EncodeToString(make([]byte, 16))), eoi.F("KerberosMaximumClockTolerance", "5")}})
	require.Equal(t, ptstatus.Success, st)
	st, _ = a.call(eoi.NetworkAdministration, "SetHostName", eoi.F("HostName", "optiplex-eoi"))
	require.Equal(t, ptstatus.Success, st)
	st, _ = a.call(eoi.NetworkAdministration, "SetDomainName", eoi.F("DomainName", "amtsim.example"))
	require.Equal(t, ptstatus.Success, st)
	st, _ = a.call(eoi.NetworkAdministration, "SetInterfaceSettings", eoi.F("InterfaceHandle", "0"),
		eoi.Field{Name: "InterfaceDescriptor", Children: []eoi.Field{eoi.F("InterfaceMode", "SHARED_MAC_ADDRESS"), eoi.F("LinkPolicy", "31")}})
	require.Equal(t, ptstatus.Success, st, "DHCP, as amttool netconf sends it")
	assert.Equal(t, mebx.StateIn, r.d.current().State, "nothing applied before the commit")

	st, _ = a.call(eoi.SecurityAdministration, "CommitChanges")
	require.Equal(t, ptstatus.Success, st)
	r.d.ev.wait(t, "provisioned", 1, 10*time.Second)
	stored, err := r.st.Load()
	require.NoError(t, err)
	assert.Equal(t, mebx.StatePost, stored.State)
	assert.Equal(t, newID.PID, stored.PID)
	assert.Equal(t, newID.PPS, stored.PPS)
	assert.True(t, stored.AMT.TLSEnabled)
	assert.Equal(t, "optiplex-eoi", stored.HostName)
	assert.Equal(t, []uint32{3, 7}, stored.AMT.Users[0].Realms)
	assert.Equal(t, "AMTSIM.EXAMPLE", stored.AMT.KerberosRealm)
	assert.Equal(t, uint32(3), stored.AMT.KerberosKeyVersion)
}

// The management classes beside provisioning: the Ethernet port, the
// host's power state, and a power change through CIM_PowerManagementService.
func TestWSMANManagementClasses(t *testing.T) {
	r := newRig(t, 11)
	ctx := context.Background()
	ws := r.wsmanAs("admin", testPassword)
	eth, err := ws.Get(ctx, wsman.AMTSchema+"AMT_EthernetPortSettings", map[string]string{"InstanceID": "Intel(r) AMT Ethernet Port Settings 0"})
	require.NoError(t, err)
	ip, _ := eth.Get("IPAddress")
	assert.Equal(t, r.d.Addr().String(), ip)
	mac, _ := eth.Get("MACAddress")
	assert.Equal(t, strings.ReplaceAll(r.id.MAC.String(), ":", "-"), mac)
	dhcp, _ := eth.Get("DHCPEnabled")
	assert.Equal(t, "true", dhcp)
	gw, _ := eth.Get("DefaultGateway")
	assert.Equal(t, r.n.Subnet().Addr().Next().String(), gw)

	power := func() string {
		t.Helper()
		all, err := ws.Enumerate(ctx, wsman.CIMSchema+"CIM_AssociatedPowerManagementService")
		require.NoError(t, err)
		require.Len(t, all, 1)
		require.NotNil(t, all[0].Ref("ServiceProvided"))
		v, _ := all[0].Get("PowerState")
		return v
	}
	assert.Equal(t, "2", power())
	out, err := ws.Invoke(ctx, wsman.CIMSchema+"CIM_PowerManagementService", "RequestPowerStateChange", nil,
		(&wsman.Instance{}).Set("PowerState", "8"))
	require.NoError(t, err)
	rv, _ := out.Get("ReturnValue")
	assert.Equal(t, "0", rv)
	assert.Equal(t, "8", power())
	out, err = ws.Invoke(ctx, wsman.CIMSchema+"CIM_PowerManagementService", "RequestPowerStateChange", nil,
		(&wsman.Instance{}).Set("PowerState", "99"))
	require.NoError(t, err)
	rv, _ = out.Get("ReturnValue")
	assert.Equal(t, "36", rv, "INVALID_PARAMETER")
}
