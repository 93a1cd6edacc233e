package scs

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/amtsim/amtsim/internal/atomicfile"
)

// CA is the SCS's certificate authority: it issues each device's TLS
// certificate. It is made once and kept on disk (ca.crt, ca.key) so that
// certificates issued before a restart still verify after it.
type CA struct {
	Cert *x509.Certificate
	key  *rsa.PrivateKey
	// Validity of issued certificates; default one year.
	Validity time.Duration
}

// LoadOrCreateCA reads dir/ca.crt and dir/ca.key, or makes a new RSA-2048
// CA there (files written to a temp name, fsynced, renamed; the key 0600).
func LoadOrCreateCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	cb, cerr := os.ReadFile(certPath)
	kb, kerr := os.ReadFile(keyPath)
	if cerr == nil && kerr == nil {
		return parseCA(cb, kb)
	}
	if !errors.Is(cerr, os.ErrNotExist) || !errors.Is(kerr, os.ErrNotExist) {
		return nil, fmt.Errorf("scs: CA in %s: %w", dir, errors.Join(cerr, kerr))
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "amtsim SCS CA", Organization: []string{"amtsim"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	return parseCA(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

func parseCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("scs: CA files are not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("scs: CA certificate: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("scs: CA key: %w", err)
	}
	key, ok := k.(*rsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("scs: CA key does not match its certificate")
	}
	return &CA{Cert: cert, key: key}, nil
}

// Pool is a certificate pool holding the CA, for verifying devices.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue makes a TLS server certificate for a device's RSA key, named
// host.domain.
func (ca *CA) Issue(pub *rsa.PublicKey, host, domain string) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	name := host
	if domain != "" {
		name += "." + domain
	}
	v := ca.Validity
	if v <= 0 {
		v = 365 * 24 * time.Hour
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(v),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	return x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
}

// clientSetupEKU is Intel's extended key usage for remote configuration
// (docs/protocol.md §11).
var clientSetupEKU = asn1.ObjectIdentifier{2, 16, 840, 1, 113741, 1, 2, 3}

// ProvisioningCertificate issues the SCS's own provisioning certificate for
// remote configuration: CN fqdn (the name devices find the SCS by, under
// their PKI DNS suffix or DHCP domain), OU "Intel(R) Client Setup
// Certificate" and the Intel EKU, with a fresh RSA-2048 key; the chain is
// [leaf, CA], so a device whose hash table holds the CA's hash
// (RootHashEntry) takes it.
func (ca *CA) ProvisioningCertificate(fqdn string) (*tls.Certificate, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial,
		Subject:   pkix.Name{CommonName: fqdn, OrganizationalUnit: []string{"Intel(R) Client Setup Certificate"}, Organization: []string{"amtsim"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0),
		KeyUsage:           x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{clientSetupEKU}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("scs: provisioning certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key}, nil
}

// RootHashEntry is the MEBx entry (amtsim mebx set pki.hash=…) that makes a
// device trust this CA for remote configuration: its SHA-256.
func (ca *CA) RootHashEntry() string {
	s := sha256.Sum256(ca.Cert.Raw)
	return "amtsim SCS CA=sha256:" + hex.EncodeToString(s[:])
}
