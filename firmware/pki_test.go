package firmware

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/digest"
	"github.com/amtsim/amtsim/hello"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/lan"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/ptstatus"
	"github.com/amtsim/amtsim/wsman"
)

var (
	pkiKeysOnce      sync.Once
	pkiRoot, pkiLeaf *rsa.PrivateKey
)

func pkiKeys(t *testing.T) (root, leaf *rsa.PrivateKey) {
	pkiKeysOnce.Do(func() {
		var err error
		if pkiRoot, err = rsa.GenerateKey(rand.Reader, 2048); err == nil {
			pkiLeaf, err = rsa.GenerateKey(rand.Reader, 2048)
		}
		require.NoError(t, err)
	})
	return pkiRoot, pkiLeaf
}

// pkiChain is an SCS's provisioning certificate: a root of its own and a
// leaf that edit shapes, as [leaf, root].
type pkiChain struct {
	rootDER []byte
	cert    tls.Certificate
}

func newPKIChain(t *testing.T, edit func(leaf *x509.Certificate)) pkiChain {
	t.Helper()
	rk, lk := pkiKeys(t)
	now := time.Now()
	rootT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "amtsim test provisioning root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(30, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootT, rootT, &rk.PublicKey, rk)
	require.NoError(t, err)
	root, _ := x509.ParseCertificate(rootDER)
	leafT := &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject:   pkix.Name{CommonName: "ProvisionServer.amtsim.example", OrganizationalUnit: []string{ClientSetupOU}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if edit != nil {
		edit(leafT)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafT, root, &lk.PublicKey, rk)
	require.NoError(t, err)
	return pkiChain{rootDER: rootDER, cert: tls.Certificate{Certificate: [][]byte{leafDER, rootDER}, PrivateKey: lk}}
}

// rootEntry is the MEBx entry that trusts c's root.
func (c pkiChain) rootEntry() string {
	s := sha256.Sum256(c.rootDER)
	return "Test Root=sha256:" + hex.EncodeToString(s[:])
}

// pkiRig is a factory-fresh AMT 5 with the test root in its hash table, on
// the embedded LAN (DHCP domain amtsim.example), and a host to reach it.
type pkiRig struct {
	d    *testDevice
	peer interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	}
	addr string
}

func newPKIRig(t *testing.T, index int, chain pkiChain, set ...string) *pkiRig {
	t.Helper()
	n, stacks := startLAN(t, lan.NetworkOptions{})
	hellos := startHelloServer(t, n, nil, nil, netip.PrefixFrom(n.SCS(), n.Subnet().Bits()), mebx.DefaultSCSPort)
	id, _ := identity.Of(60, 0, index)
	s := mebx.Defaults()
	require.NoError(t, s.Set(append([]string{"pki.hash=" + chain.rootEntry()}, set...)...))
	d := bootDevice(t, Options{Uplink: n.Segment, Stacks: stacks}, id, s)
	h := hellos.next(t, 10*time.Second)
	require.Equal(t, hello.VersionPKI, h.Version)
	require.Len(t, h.Hashes, len(s.PKI.Active()), "the Hello carries the active hashes")
	peer, err := n.AddHost(net.HardwareAddr{0x02, 0xa0, 0, 0, 0, 0x45}, netip.MustParsePrefix("198.18.0.45/15"), nil)
	require.NoError(t, err)
	return &pkiRig{d: d, peer: peer, addr: netip.AddrPortFrom(d.Addr(), PortHTTPS).String()}
}

// handshake connects as an SCS presenting certs (none when nil).
func (r *pkiRig) handshake(t *testing.T, certs []tls.Certificate) (*tls.Conn, error) {
	t.Helper()
	c, err := r.peer.DialContext(t.Context(), "tcp", r.addr)
	require.NoError(t, err)
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, Certificates: certs,
		CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}})
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	err = tc.Handshake()
	if err != nil {
		tc.Close()
	}
	return tc, err
}

// An SCS with a provisioning certificate whose root is in the table gets
// in: the device serves its self-signed certificate over TLS 1.0 and takes
// the admin with an empty password while the MEBx password is the
// factory's, and never the factory password itself.
func TestPKISetupAcceptsAProvisioningCertificate(t *testing.T) {
	chain := newPKIChain(t, nil)
	r := newPKIRig(t, 1, chain)
	tc, err := r.handshake(t, []tls.Certificate{chain.cert})
	require.NoError(t, err)
	st := tc.ConnectionState()
	assert.Equal(t, uint16(tls.VersionTLS10), st.Version)
	require.Len(t, st.PeerCertificates, 1)
	assert.Equal(t, st.PeerCertificates[0].Issuer.String(), st.PeerCertificates[0].Subject.String(), "self-signed")
	tc.Close()
	acc := r.d.ev.wait(t, "pki.accepted", 1, 5*time.Second)
	cn, _ := acc[0].Attr("cn")
	assert.Equal(t, "ProvisionServer.amtsim.example", cn.String())

	call := func(password string) (*wsman.Instance, error) {
		c := &digest.Client{Username: "admin", Password: password}
		ws := &wsman.Client{URL: "https://" + r.addr + "/wsman", HTTP: &http.Client{Transport: &digest.Transport{Client: c, Base: &http.Transport{
			DialContext: r.peer.DialContext,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, Certificates: []tls.Certificate{chain.cert},
				CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA}}}}}}
		return ws.Get(t.Context(), wsman.GeneralSettings, nil)
	}
	gs, err := call("")
	require.NoError(t, err)
	realm, _ := gs.Get("DigestRealm")
	assert.True(t, strings.HasPrefix(realm, "Digest:"))
	_, err = call(mebx.FactoryPassword)
	assert.ErrorContains(t, err, "401", "the factory password is not valid on the network")
}

// Every chain AMT would refuse is refused the same way: a bad_certificate
// alert at the SCS, a tls.failed event naming the reason, and the counter.
func TestPKISetupRefusals(t *testing.T) {
	good := newPKIChain(t, nil)
	leafOnly := good.cert
	leafOnly.Certificate = leafOnly.Certificate[:1]
	for _, tc := range []struct {
		name   string
		chain  pkiChain
		certs  func(c pkiChain) []tls.Certificate
		set    []string
		reason string
	}{
		{name: "root hash not active", chain: good, set: []string{"pki.hash.inactive=Test Root"}, reason: RefuseRootHash},
		{name: "leaf without OU or EKU", chain: newPKIChain(t, func(l *x509.Certificate) { l.Subject.OrganizationalUnit = nil }), reason: RefuseUsage},
		{name: "CN outside the domain", chain: newPKIChain(t, func(l *x509.Certificate) { l.Subject.CommonName = "scs.elsewhere.example" }), reason: RefuseDomain},
		{name: "CN outside the PKI DNS suffix", chain: good, set: []string{"pki.dns_suffix=lab.example"}, reason: RefuseDomain},
		{name: "expired leaf", chain: newPKIChain(t, func(l *x509.Certificate) {
			l.NotBefore, l.NotAfter = time.Now().AddDate(-3, 0, 0), time.Now().AddDate(-1, 0, 0)
		}), reason: RefuseExpired},
		{name: "no client certificate", chain: good, certs: func(pkiChain) []tls.Certificate { return nil }, reason: RefuseNoCert},
		{name: "no root in the chain", chain: good, certs: func(pkiChain) []tls.Certificate { return []tls.Certificate{leafOnly} }, reason: RefuseChain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newPKIRig(t, 2, tc.chain, tc.set...)
			certs := []tls.Certificate{tc.chain.cert}
			if tc.certs != nil {
				certs = tc.certs(tc.chain)
			}
			_, err := r.handshake(t, certs)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "bad certificate", "the SCS hears a TLS alert")
			failed := r.d.ev.wait(t, "tls.failed", 1, 5*time.Second)
			reason, _ := failed[0].Attr("reason")
			assert.Equal(t, tc.reason, reason.String())
			assert.Equal(t, uint64(1), r.d.Stats.CertRefusals.Load())
			assert.Empty(t, r.d.ev.named("pki.accepted"))
		})
	}
}

// The OID alone marks a provisioning certificate (MeshCentral's own leaf
// has it with O, not OU), and a PKI DNS suffix takes the place of the
// DHCP domain.
func TestPKISetupEKUAndSuffix(t *testing.T) {
	chain := newPKIChain(t, func(l *x509.Certificate) {
		l.Subject = pkix.Name{CommonName: "scs.lab.example", Organization: []string{ClientSetupOU}}
		l.UnknownExtKeyUsage = append(l.UnknownExtKeyUsage, ClientSetupEKU)
	})
	r := newPKIRig(t, 3, chain, "pki.dns_suffix=LAB.example")
	tc, err := r.handshake(t, []tls.Certificate{chain.cert})
	require.NoError(t, err)
	tc.Close()
	r.d.ev.wait(t, "pki.accepted", 1, 5*time.Second)
}

func TestFitsDomain(t *testing.T) {
	for _, tc := range []struct {
		cn, domain string
		ok         bool
	}{
		{"ProvisionServer.lab.example", "lab.example", true},
		{"lab.example", "lab.example", true},
		{"a.b.LAB.example.", "lab.example", true},
		{"evillab.example", "lab.example", false},
		{"lab.example.evil", "lab.example", false},
		{"x.lab.example", "", false},
	} {
		assert.Equal(t, tc.ok, fitsDomain(tc.cn, tc.domain), "%q under %q", tc.cn, tc.domain)
	}
}

// AddCertificate takes a certificate with a negative serial number, as
// AMT does and as MeshCentral issues a few in a hundred (go.mod's godebug).
func TestAddCertificateNegativeSerial(t *testing.T) {
	rk, _ := pkiKeys(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x1234), Subject: pkix.Name{CommonName: "IntelAMT-0123456789ab"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rk.PublicKey, rk)
	require.NoError(t, err)
	i := strings.Index(string(der), "\x02\x02\x12\x34")
	require.Positive(t, i)
	der[i+2], der[i+3] = 0x99, 0x99 // serial -26215: the signature no longer matches, which AddCertificate does not check
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err, "negative serials parse")
	assert.Negative(t, c.SerialNumber.Sign())
	s := &session{d: &Device{}, staged: &mebx.Settings{State: mebx.StateIn}}
	_, st := s.AddCertificate(der)
	assert.Equal(t, ptstatus.Success, st)
}

// The certificate TLS serves, and its key, cannot be deleted (MeshCentral's
// management tries every certificate and relies on the refusal); others
// can.
func TestDeleteRefusesCredentialInUse(t *testing.T) {
	rk, lk := pkiKeys(t)
	cert := func(k *rsa.PrivateKey, serial int64) []byte {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "IntelAMT-" + fmt.Sprint(serial)},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		require.NoError(t, err)
		return der
	}
	s := &session{d: &Device{}, staged: &mebx.Settings{State: mebx.StateIn}}
	rg, err := NewGeneratedKey(rk)
	require.NoError(t, err)
	lg, err := NewGeneratedKey(lk)
	require.NoError(t, err)
	inUse, st := s.addKey(rg)
	require.Equal(t, ptstatus.Success, st)
	spare, st := s.addKey(lg)
	require.Equal(t, ptstatus.Success, st)
	c1, st := s.AddCertificate(cert(rk, 1))
	require.Equal(t, ptstatus.Success, st)
	c2, st := s.AddCertificate(cert(lk, 2))
	require.Equal(t, ptstatus.Success, st)
	require.Equal(t, ptstatus.Success, s.SetTLSCertificate(c1))

	h := &wsmanHandler{s: s}
	s.admin = true
	err2 := h.Delete(wsman.PublicKeyCertificate, map[string]string{"InstanceID": c1})
	var f *wsman.Fault
	require.ErrorAs(t, err2, &f, "deleting the certificate in use is a fault")
	assert.Contains(t, f.Reason, "STORAGE_ACL_ENTRY_IN_USE")
	assert.Equal(t, ptstatus.StorageACLEntryInUse, s.DeleteCredential(false, inUse))
	assert.Equal(t, ptstatus.Success, s.DeleteCredential(true, c2))
	assert.Equal(t, ptstatus.Success, s.DeleteCredential(false, spare))
	assert.Equal(t, ptstatus.InvalidHandle, s.DeleteCredential(true, c2), "gone")
	v := s.view()
	assert.Len(t, v.AMT.Certs, 1)
	assert.Len(t, v.AMT.Keys, 1)
	assert.Equal(t, c1, v.AMT.TLSCert)
}
