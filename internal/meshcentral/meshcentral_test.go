package meshcentral

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/fleet"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/netns"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
)

// The lab: a namespace with a TAP whose kernel side is the router, DHCP
// (option 15 lab.example) and DNS server (dnsmasq) and MeshCentral's
// address, ProvisionServer.lab.example.
const (
	domain      = "lab.example"
	router      = "198.19.7.1"
	trustedFQDN = "ProvisionServer." + domain
	mebxPass    = "Mebx-Pass2!"
	adminPass   = "Admin-Pass3!"
)

// chain is a provisioning certificate of the lab's own CA, as an IT
// department buys or makes one: leaf CN = the trusted FQDN, OU and EKU
// of a client setup certificate.
type chain struct {
	certPEM []string
	keyPEM  string
	rootDER []byte
}

func newChain(t testing.TB) chain {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	lk, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	now := time.Now()
	rootT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "amtsim lab provisioning root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(20, 0, 0), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootT, rootT, &rk.PublicKey, rk)
	require.NoError(t, err)
	root, _ := x509.ParseCertificate(rootDER)
	leafT := &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject:   pkix.Name{CommonName: trustedFQDN, OrganizationalUnit: []string{firmware.ClientSetupOU}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(2, 0, 0), KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, UnknownExtKeyUsage: []asn1.ObjectIdentifier{firmware.ClientSetupEKU}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafT, root, &lk.PublicKey, rk)
	require.NoError(t, err)
	pemOf := func(typ string, b []byte) string { return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})) }
	return chain{certPEM: []string{pemOf("CERTIFICATE", leafDER), pemOf("CERTIFICATE", rootDER)},
		keyPEM: pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(lk)), rootDER: rootDER}
}

// hashEntry is the MEBx entry trusting the chain's root: SHA-1 as an AMT 5
// MEBx takes it.
func (c chain) hashEntry() string {
	s := sha1.Sum(c.rootDER)
	return "pki.hash=amtsim lab root=sha1:" + hex.EncodeToString(s[:])
}

// lab is the namespace, its TAP and dnsmasq, shared by the cases.
type lab struct {
	ns     *netns.NS
	tap    *nic.TAP
	stacks *nic.Stacks
	chain  chain
	certs  string // MeshCentral's own certificates, made by the first start
}

func newLab(t testing.TB) *lab {
	netns.Need(t, "dnsmasq")
	Need(t)
	ns := netns.New(t)
	tap := ns.TAP(t, "amt0", router+"/24")
	ns.Dnsmasq(t, netns.DnsmasqOptions{Interface: "amt0", Range: "198.19.7.100,198.19.7.199,255.255.255.0,1h",
		Domain: domain, Router: router, Hosts: []string{trustedFQDN + "," + router}})
	stacks := nic.NewStacks(nic.StackOptions{})
	t.Cleanup(stacks.Close)
	return &lab{ns: ns, tap: tap, stacks: stacks, chain: newChain(t), certs: t.TempDir()}
}

func (l *lab) meshcentral(t testing.TB, unpatched, secLevel0 bool) *Server {
	t.Helper()
	certs := ""
	if m, _ := filepath.Glob(filepath.Join(l.certs, "*.key")); len(m) > 0 {
		certs = l.certs
	}
	s := Start(t, Options{NS: l.ns, Unpatched: unpatched, SecLevel0: secLevel0, TrustedFQDN: trustedFQDN,
		MEBxPassword: mebxPass, AdminPassword: adminPass, CertPEM: l.chain.certPEM, KeyPEM: l.chain.keyPEM, Certs: certs})
	if certs == "" {
		require.NoError(t, s.SaveCerts(l.certs))
	}
	return s
}

// record keeps a fleet's events by device.
type record struct {
	mu  sync.Mutex
	evs map[string][]firmware.Event
}

func (r *record) sink(e firmware.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.evs == nil {
		r.evs = map[string][]firmware.Event{}
	}
	r.evs[e.Device] = append(r.evs[e.Device], e)
}

func (r *record) named(dev, name string) []firmware.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []firmware.Event
	for _, e := range r.evs[dev] {
		if string(e.Name) == name {
			out = append(out, e)
		}
	}
	return out
}

// loggedInAfterCommit reports whether dev had a login after its commit.
func (r *record) loggedInAfterCommit(dev string) bool {
	prov := r.named(dev, "provisioned")
	if len(prov) == 0 {
		return false
	}
	for _, e := range r.named(dev, "session.login") {
		if e.Time.After(prov[0].Time) {
			return true
		}
	}
	return false
}

// bootFleet powers on n factory-fresh devices of profile p that trust the
// lab's root, on the lab's TAP.
func (l *lab) bootFleet(t testing.TB, ctx context.Context, n, shard int, p firmware.Profile, st func(int) mebx.Store) (*fleet.Fleet, *record) {
	t.Helper()
	f, rec := l.newFleet(t, ctx, n, shard, p, st)
	require.NoError(t, f.Start(ctx))
	return f, rec
}

// newFleet makes the devices of bootFleet, powered off.
func (l *lab) newFleet(t testing.TB, ctx context.Context, n, shard int, p firmware.Profile, st func(int) mebx.Store) (*fleet.Fleet, *record) {
	t.Helper()
	rec := &record{}
	f, err := fleet.New(ctx, fleet.Options{Devices: n, Seed: 4901, Shard: shard, Uplink: l.tap, Stacks: l.stacks,
		Factory: true, Profile: p, MEBx: []string{l.chain.hashEntry()}, Clock: clock.Real(), Events: rec.sink, Store: st})
	require.NoError(t, err)
	t.Cleanup(func() {
		f.Stop()
		if t.Failed() {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			for dev, evs := range rec.evs {
				for _, e := range evs {
					if e.Name != "dhcp.renewing" && e.Name != "dhcp.renewed" {
						t.Logf("%s %s %s %v", e.Time.Format("15:04:05.000"), dev, e.Name, e.Attrs)
					}
				}
			}
		}
	})
	return f, rec
}

// nodeID is MeshCentral's node id for a UUID: base64 of the UUID's bytes
// (canonical order) three times, '+' as '@' and '/' as '$'.
func nodeID(u identity.UUID) string {
	b := append(append(u[:], u[:]...), u[:]...)
	return "node//" + strings.NewReplacer("+", "@", "/", "$").Replace(base64.StdEncoding.EncodeToString(b))
}

// MeshCentral 1.1.55, unmodified but for #4901, activates simulated
// devices by bare-metal ACM activation; unpatched, it crashes on the first
// Hello as its issue #4901 reports; and an AMT 5 device's TLS 1.0 pairs
// with it only when Node's OpenSSL runs at security level 0.
func TestMeshCentralBareMetalActivation(t *testing.T) {
	l := newLab(t)

	t.Run("unpatched crashes on the Hello (#4901)", func(t *testing.T) {
		mc := l.meshcentral(t, true, true)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		f, rec := l.bootFleet(t, ctx, 1, 1, firmware.AMT5(), nil)
		dev := f.Devices()[0]
		mc.WaitLog(t, "ERR_OSSL_X509_KEY_VALUES_MISMATCH", time.Minute)
		mc.WaitLog(t, "Restarting in 5 seconds", 10*time.Second)
		assert.NotEmpty(t, rec.named(dev.ID(), "hello.sent"))
		assert.Equal(t, uint64(0), dev.Stats.ConnsAccepted.Load(), "MeshCentral died before connecting back")
	})

	t.Run("amt5 at OpenSSL's default security level", func(t *testing.T) {
		mc := l.meshcentral(t, false, false)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		f, rec := l.bootFleet(t, ctx, 1, 2, firmware.AMT5(), nil)
		dev := f.Devices()[0]
		mc.WaitLog(t, "Failed TLS connection, status=408.", time.Minute)
		var reasons []string
		for _, e := range rec.named(dev.ID(), "tls.failed") {
			if r, ok := e.Attr("reason"); ok {
				reasons = append(reasons, r.String())
			}
		}
		assert.Contains(t, reasons, firmware.RefuseNoCert, "OpenSSL 3 at level 1 sends no certificate under TLS 1.0")
		assert.Empty(t, rec.named(dev.ID(), "provisioned"))
		acts, err := mc.Activations()
		require.NoError(t, err)
		assert.Empty(t, acts)
	})

	t.Run("amt5 at SECLEVEL=0 is activated", func(t *testing.T) {
		mc := l.meshcentral(t, false, true)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		path := filepath.Join(t.TempDir(), "mebx.json")
		f, rec := l.bootFleet(t, ctx, 1, 3, firmware.AMT5(), func(int) mebx.Store { return mebx.NewFileStore(path) })
		require.NoError(t, f.Wait(ctx), "every device provisioned")
		dev, id := f.Devices()[0], f.Identities()[0]
		mc.WaitLog(t, "Intel AMT ACM activation completed.", time.Minute)

		acts, err := mc.Activations()
		require.NoError(t, err)
		require.Len(t, acts, 1)
		assert.Equal(t, "acmactivate-bare-metal", acts[0].Action)
		assert.True(t, strings.EqualFold(id.UUID.String(), acts[0].UUID), "%s vs %s", id.UUID, acts[0].UUID)
		assert.Equal(t, firmware.FirmwareVersion, acts[0].Version)
		nodes, err := mc.Nodes()
		require.NoError(t, err)
		node, ok := nodes[nodeID(id.UUID)]
		require.True(t, ok, "MeshCentral's node database has the device (%d nodes)", len(nodes))
		assert.Equal(t, 4, node.IntelAMT.Flags, "ACM")
		assert.Equal(t, 2, node.IntelAMT.State, "activated")

		stored, err := mebx.NewFileStore(path).Load()
		require.NoError(t, err)
		assert.Equal(t, mebx.StatePost, stored.State)
		require.NotNil(t, stored.AMT.Audit)
		assert.Equal(t, "pki", stored.AMT.Audit.Method)
		assert.Equal(t, trustedFQDN, stored.AMT.Audit.CertCN)
		assert.True(t, stored.AMT.TLSEnabled)
		assert.Equal(t, mebxPass, stored.Password, "MeshCentral's SetMEBxPassword")
		assert.NotEmpty(t, rec.named(dev.ID(), "pki.accepted"))
	})

	t.Run("ten amt11 devices activated and managed", func(t *testing.T) {
		mc := l.meshcentral(t, false, false)
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
		defer cancel()
		const n = 10
		f, rec := l.bootFleet(t, ctx, n, 4, firmware.AMT11(), nil)
		require.NoError(t, f.Wait(ctx), "every device provisioned")
		nodes := map[string]Node{}
		require.Eventually(t, func() bool {
			acts, _ := mc.Activations()
			nodes, _ = mc.Nodes()
			return len(acts) == n && len(nodes) == n
		}, time.Minute, 100*time.Millisecond, "MeshCentral recorded every activation")
		for i, dev := range f.Devices() {
			id := f.Identities()[i]
			node, ok := nodes[nodeID(id.UUID)]
			if assert.True(t, ok, "node of %s", dev.ID()) {
				assert.Equal(t, 4, node.IntelAMT.Flags, "%s: ACM", dev.ID())
			}
			// The AMT manager logs in afterwards with the device group's
			// password, which reached the device only as the
			// DigestPassword of SetAdminAclEntryEx: a login after the
			// commit is proof it took.
			require.Eventually(t, func() bool { return rec.loggedInAfterCommit(dev.ID()) },
				time.Minute, 100*time.Millisecond, "%s: MeshCentral's management login after the activation", dev.ID())
		}
	})
}
