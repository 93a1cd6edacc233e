package firmware

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/tlspsk"
)

// PKI remote configuration (docs/protocol.md §11). In setup the device is
// the TLS server on 16993 with a certificate it made itself, and asks the
// SCS for its provisioning certificate chain. It accepts the chain when:
//
//   - the chain is whole: each certificate signed by the next, ending in a
//     self-signed root, every one within its validity at AMT's clock;
//   - the root's hash, in the algorithm of a table entry, is an active
//     entry of the MEBx certificate hash table;
//   - the leaf carries OU "Intel(R) Client Setup Certificate" or the
//     extended key usage OID 2.16.840.1.113741.1.2.3;
//   - the leaf's CN is the PKI DNS suffix from MEBx or a name under it, or,
//     with no suffix set, the DHCP option 15 domain or a name under it (MED:
//     Intel states the rule as "the CN must match the domain"; the match of
//     subdomains is the common reading).
//
// Anything else is a refusal: a bad_certificate alert, a tls.failed event
// with the reason, and Stats.CertRefusals.

// ClientSetupOU and ClientSetupEKU mark a provisioning certificate.
const ClientSetupOU = "Intel(R) Client Setup Certificate"

// ClientSetupEKU is Intel's extended key usage for remote configuration.
var ClientSetupEKU = asn1.ObjectIdentifier{2, 16, 840, 1, 113741, 1, 2, 3}

// CertRefusal is a provisioning certificate chain the device refused.
type CertRefusal struct {
	// Reason is one of the Refuse* values: a short, stable word for
	// counting and for tests.
	Reason string
	// Detail says what was wrong (subjects, the CN and the domain, dates);
	// no secret is in it.
	Detail string
}

// The reasons of CertRefusal.
const (
	RefuseNoCert    = "no_client_certificate"
	RefuseMalformed = "malformed_certificate"
	RefuseChain     = "chain_broken"
	RefuseRootHash  = "root_hash_not_active"
	RefuseUsage     = "not_a_setup_certificate"
	RefuseDomain    = "cn_outside_domain"
	RefuseExpired   = "certificate_expired"
	RefuseNoDomain  = "no_domain_to_match"
	RefusePKINotOn  = "remote_configuration_off"
)

func (e *CertRefusal) Error() string {
	return "provisioning certificate refused (" + e.Reason + "): " + e.Detail
}

// pkiPeer is what the device learnt of the SCS from its chain.
type pkiPeer struct {
	CN       string
	RootName string // the matching table entry
	RootHash string // its algorithm and hex
}

// checkProvisioningChain applies the rules above to the chain as sent,
// leaf first.
func checkProvisioningChain(raw [][]byte, p *mebx.PKI, domain string, now time.Time) (pkiPeer, error) {
	if len(raw) == 0 {
		return pkiPeer{}, &CertRefusal{RefuseNoCert, "the SCS sent no certificate"}
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, b := range raw {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return pkiPeer{}, &CertRefusal{RefuseMalformed, fmt.Sprintf("certificate %d of %d: %v", i+1, len(raw), err)}
		}
		certs[i] = c
	}
	for i, c := range certs {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return pkiPeer{}, &CertRefusal{RefuseExpired, fmt.Sprintf("%q is valid %s to %s, AMT's clock says %s", c.Subject.CommonName,
				c.NotBefore.UTC().Format(time.DateOnly), c.NotAfter.UTC().Format(time.DateOnly), now.UTC().Format(time.RFC3339))}
		}
		next := c
		if i+1 < len(certs) {
			next = certs[i+1]
		}
		if err := c.CheckSignatureFrom(next); err != nil {
			if i+1 == len(certs) {
				return pkiPeer{}, &CertRefusal{RefuseChain, fmt.Sprintf("the chain ends in %q, which is not a self-signed root", c.Subject.CommonName)}
			}
			return pkiPeer{}, &CertRefusal{RefuseChain, fmt.Sprintf("%q is not signed by %q: %v", c.Subject.CommonName, next.Subject.CommonName, err)}
		}
	}
	root := raw[len(raw)-1]
	var match *mebx.RootHash
	for _, h := range p.Active() {
		if sum := rootHash(h.Algorithm, root); sum != nil && string(sum) == string(h.Hash) {
			match = &h
			break
		}
	}
	if match == nil {
		s1 := sha1.Sum(root)
		return pkiPeer{}, &CertRefusal{RefuseRootHash, fmt.Sprintf("root %q (SHA-1 %s) is not an active entry of the certificate hash table",
			certs[len(certs)-1].Subject.CommonName, hex.EncodeToString(s1[:]))}
	}
	leaf := certs[0]
	if !slices.Contains(leaf.Subject.OrganizationalUnit, ClientSetupOU) &&
		!slices.ContainsFunc(leaf.UnknownExtKeyUsage, func(o asn1.ObjectIdentifier) bool { return o.Equal(ClientSetupEKU) }) {
		return pkiPeer{}, &CertRefusal{RefuseUsage, fmt.Sprintf("leaf %q has neither OU %q nor the extended key usage %s", leaf.Subject.CommonName, ClientSetupOU, ClientSetupEKU)}
	}
	if domain == "" {
		return pkiPeer{}, &CertRefusal{RefuseNoDomain, "no PKI DNS suffix in MEBx and no DHCP option 15 domain to match the CN against"}
	}
	if !fitsDomain(leaf.Subject.CommonName, domain) {
		return pkiPeer{}, &CertRefusal{RefuseDomain, fmt.Sprintf("CN %q is not %q or a name under it", leaf.Subject.CommonName, domain)}
	}
	return pkiPeer{CN: leaf.Subject.CommonName, RootName: match.Name, RootHash: match.Algorithm.String() + ":" + hex.EncodeToString(match.Hash)}, nil
}

func rootHash(a mebx.HashAlgorithm, der []byte) []byte {
	switch a {
	case mebx.SHA1:
		s := sha1.Sum(der)
		return s[:]
	case mebx.SHA256:
		s := sha256.Sum256(der)
		return s[:]
	case mebx.SHA384:
		s := sha512.Sum384(der)
		return s[:]
	}
	return nil
}

// fitsDomain reports whether cn is domain or a name under it, without
// regard to case or a trailing dot.
func fitsDomain(cn, domain string) bool {
	cn = strings.TrimSuffix(strings.ToLower(cn), ".")
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	return domain != "" && (cn == domain || strings.HasSuffix(cn, "."+domain))
}

// pkiDomain is the domain a provisioning certificate's CN must fit: the PKI
// DNS suffix, else the DHCP option 15 domain of the lease.
func (d *Device) pkiDomain(s *mebx.Settings) string {
	if s.PKI.DNSSuffix != "" {
		return s.PKI.DNSSuffix
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !s.DHCP || !d.bound {
		return ""
	}
	return d.lease.Domain
}

// setupCertificate is the certificate the device serves on 16993 in PKI
// setup: self-signed, made at the first need in each power-on life of the
// device object and kept. Its key comes from Options.KeyPairs when set (a
// fleet's pool), so a fleet pays one signature per device, not a key.
func (d *Device) setupCertificate() (*tls.Certificate, error) {
	d.mu.Lock()
	c := d.setupCert
	d.mu.Unlock()
	if c != nil {
		return c, nil
	}
	g, err := d.newKey()
	if err != nil {
		return nil, err
	}
	k := g.Key
	now := d.rtc()
	serial := new(big.Int).SetBytes(d.o.Identity.MAC)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: d.o.Identity.HostName, Organization: []string{"Intel(R) Corporation"}, OrganizationalUnit: []string{"Intel(R) AMT"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(20, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, fmt.Errorf("setup certificate: %w", err)
	}
	c = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	d.mu.Lock()
	if d.setupCert == nil {
		d.setupCert = c
	}
	c = d.setupCert
	d.mu.Unlock()
	return c, nil
}

// rsaSuites are the static-RSA suites of AMT's certificate TLS: AES-CBC
// with SHA-1 (all versions) and, for TLS 1.2, AES-GCM.
func rsaSuites(max uint16) []uint16 {
	s := []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA}
	if max >= tls.VersionTLS12 {
		s = append([]uint16{tls.TLS_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_RSA_WITH_AES_128_GCM_SHA256}, s...)
	}
	return s
}

// pkiServer runs the setup handshake of remote configuration on c.
func (d *Device) pkiServer(ctx context.Context, c net.Conn, s *mebx.Settings) (net.Conn, pkiPeer, error) {
	cert, err := d.setupCertificate()
	if err != nil {
		return nil, pkiPeer{}, err
	}
	var peer pkiPeer
	domain := d.pkiDomain(s)
	now := d.amtNow(s)
	tc := tls.Server(c, &tls.Config{
		Certificates: []tls.Certificate{*cert},
		MinVersion:   d.o.TLSMinVersion, MaxVersion: d.o.TLSMaxVersion,
		CipherSuites: rsaSuites(d.o.TLSMaxVersion),
		// No session tickets, as on 16993 once provisioned (tlsServer).
		SessionTicketsDisabled: true,
		// Requested rather than required, so that a missing chain is our
		// refusal with our reason (the alert is bad_certificate either way).
		ClientAuth: tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			p, err := checkProvisioningChain(raw, &s.PKI, domain, now)
			peer = p
			return err
		},
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, pkiPeer{}, err
	}
	return tc, peer, nil
}

// amtNow is AMT's clock under settings s.
func (d *Device) amtNow(s *mebx.Settings) time.Time {
	return d.rtc().Add(time.Duration(s.AMT.ClockOffset) * time.Second)
}

// peekedConn reads through the buffer a ClientHello was peeked into.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// setupTLS picks the setup handshake from the ClientHello: TLS-PSK when
// it offers a PSK suite and PID/PPS is set (and the generation has PSK),
// else remote configuration when it is ready.
func (d *Device) setupTLS(ctx context.Context, c net.Conn, s *mebx.Settings) (net.Conn, *pkiPeer, error) {
	br := bufio.NewReaderSize(c, 4096)
	pc := &peekedConn{Conn: c, r: br}
	// The wait for the ClientHello has the handshake's bound; PowerOff
	// closes the connection, which ends it too.
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(dl)
	}
	suites, perr := tlspsk.PeekSuites(br)
	_ = c.SetReadDeadline(time.Time{})
	psk := d.prof.PSK && s.PID != ""
	wantsPSK := perr == nil && slices.ContainsFunc(suites, tlspsk.IsPSKSuite)
	switch {
	case psk && (wantsPSK || !s.RemoteConfigReady()):
		tc, err := d.pskServer(ctx, pc, s)
		return tc, nil, err
	case s.RemoteConfigReady():
		if perr != nil {
			return nil, nil, fmt.Errorf("not a TLS ClientHello: %w", perr)
		}
		tc, peer, err := d.pkiServer(ctx, pc, s)
		if err != nil {
			return nil, nil, err
		}
		return tc, &peer, nil
	case !d.prof.PSK:
		return nil, nil, &CertRefusal{RefusePKINotOn, "remote configuration is off or has no active certificate hash, and this firmware has no TLS-PSK"}
	}
	return nil, nil, errors.New("no PID/PPS and no remote configuration: TLS is not set up")
}
