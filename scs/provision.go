// Package scs is the reference Setup and Configuration Server: it takes an
// AMT 5 device in setup mode from its Hello to provisioned, over TLS-PSK
// (or Digest alone on 16992) and WS-Management, as docs/protocol.md §8 lists.
package scs

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/amtsim/amtsim/digest"
	"github.com/amtsim/amtsim/ptstatus"
	"github.com/amtsim/amtsim/tlspsk"
	"github.com/amtsim/amtsim/wsman"
)

// AMT's ports.
const (
	PortHTTP  = 16992
	PortHTTPS = 16993
)

// Target is the device to provision as the SCS knows it from the Hello and
// its database.
type Target struct {
	Addr string // host (IP) of the device
	// Dial opens TCP connections (default net.Dialer); tests and the
	// embedded LAN pass their own.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	PID  string
	PPS  string
	// Password is the MEBx password the admin logs in with in setup.
	Password string
	// NoTLS provisions over plain 16992 with Digest only.
	NoTLS bool
	// PKI is remote configuration: certificate TLS on 16993 presenting this
	// provisioning chain, in place of TLS-PSK (PID and PPS unused).
	PKI *tls.Certificate
	// CallTimeout bounds each request and its answer (0: none). A device
	// that loses power after acknowledging a request never answers it, and
	// no TCP segment tells the SCS so.
	CallTimeout time.Duration
	// IgnoreReturnValues takes a refused call as done: a deliberate flaw
	// (Flaws.TrustAnswers), never the default.
	IgnoreReturnValues bool
	// IgnoreStale gives up a call answered 401 stale=true: a deliberate
	// flaw (Flaws.IgnoreStale, digest.Transport.IgnoreStale), never the
	// default.
	IgnoreStale bool
}

// User is a user ACL entry to add.
type User struct {
	Name     string `json:"name,omitempty"` // Digest user; empty for a Kerberos-only user
	Password string `json:"password,omitempty"`
	// KerberosSID is the user's (or a group's) SID, base64 of the binary
	// form as AMT takes it; a profile file may give S-1-… instead.
	KerberosSID string `json:"kerberos_sid,omitempty"`
	// KerberosPrincipal (name@REALM, or name in the profile's realm)
	// stands for a user of a KDC without Active Directory, whose tickets
	// carry no SID: the profile gives the user negotiate.PrincipalSID of
	// it, the SID the device derives from such a ticket.
	KerberosPrincipal string   `json:"kerberos_principal,omitempty"`
	Access            uint32   `json:"access"` // 0 local, 1 network, 2 both
	Realms            []uint32 `json:"realms,omitempty"`
}

// Profile is what the SCS configures.
type Profile struct {
	NewPID, NewPPS  string // empty keeps the current pair
	NewMEBxPassword string // empty keeps it
	AdminUser       string
	AdminPassword   string
	Users           []User
	HostName        string
	// DomainName is given to the device; empty keeps the one it has (from
	// DHCP option 15 or MEBx).
	DomainName string
	// AcceptNonSecure keeps plain 16992 open beside TLS on 16993 once
	// provisioned (AMT_TLSSettingData.AcceptNonSecureConnections), for
	// tools such as amttool that speak HTTP only.
	AcceptNonSecure bool
	// Key is installed with AddKey; nil asks the device to GenerateKeyPair.
	Key *rsa.PrivateKey
	// Certify issues the device's TLS certificate for its public key.
	// Nil leaves TLS off.
	Certify func(pub *rsa.PublicKey, host, domain string) (der []byte, err error)
	// Kerberos settings, when the profile uses Negotiate.
	Kerberos *Kerberos
	// Now is the SCS's clock (default time.Now).
	Now func() time.Time
}

// Kerberos is AMT_KerberosSettingData.
type Kerberos struct {
	Realm string
	// SPNs are the service principal names the SCS reports with the
	// settings, each with {fqdn} standing for the device's name.domain.
	// AMT stores and ignores them; the KDC must hold them, with the key of
	// Password (Intel registers HTTP/fqdn:16992 and HTTP/fqdn:16993;
	// clients that leave the port out, as curl and most browsers do, ask
	// for HTTP/fqdn).
	SPNs       []string
	KeyVersion uint32
	// Encryption is AMT's EncryptionAlgorithm: 0, RC4-HMAC, the one AMT 5
	// has.
	Encryption uint32
	// MasterKey is the 16-byte RC4-HMAC key of the AMT object's password.
	MasterKey []byte
	// Password is that password, when the profile gives it rather than
	// the key; MasterKey is derived from it.
	Password     string
	MaxClockSkew uint32 // minutes, at most 5
}

// DefaultSPNs are the names Intel's guide registers for the SOAP ports.
func DefaultSPNs() []string { return []string{"HTTP/{fqdn}:16992", "HTTP/{fqdn}:16993"} }

// StepResult is one step of a provisioning and how it went.
type StepResult struct {
	Step     string
	Duration time.Duration
	Err      error
}

// StepError is a failed step; the status is set when AMT answered with a
// PT_STATUS rather than a transport or SOAP error.
type StepError struct {
	Step   string
	Status ptstatus.Code
	Err    error
}

func (e *StepError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("scs: %s: %v", e.Step, e.Err)
	}
	return fmt.Sprintf("scs: %s: %v", e.Step, e.Status)
}

func (e *StepError) Unwrap() error { return e.Err }

// Result is what a provisioning did.
type Result struct {
	Host      string // the device's host name and domain after provisioning
	Domain    string
	Realm     string
	Version   string
	CertDER   []byte
	Steps     []StepResult
	Committed bool
}

// Session is an authenticated WS-MAN connection to one device.
type Session struct {
	WSMAN  *wsman.Client
	Digest *digest.Client
	close  func()
	// tlsConf is an operational session's TLS config (nil for a setup one),
	// which a caller may add to before the first call.
	tlsConf *tls.Config
	// pki: remote configuration, which provisions from the factory state
	// (ProvisioningState 0) as well as from setup.
	pki bool
	// ignoreRV: Target.IgnoreReturnValues.
	ignoreRV bool
}

// Close drops the connection.
func (s *Session) Close() { s.close() }

// dialer returns t's dial function.
func (t *Target) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	if t.Dial != nil {
		return t.Dial
	}
	var d net.Dialer
	return d.DialContext
}

// OpenSetup opens the setup session: TLS-PSK on 16993 with PID/PPS (or
// plain 16992), Digest as admin with the MEBx password. One TCP connection
// carries the whole session, as the device stages changes per connection.
func OpenSetup(t Target) *Session {
	dial := t.dialer()
	addr := net.JoinHostPort(t.Addr, strconv.Itoa(PortHTTPS))
	url := "https://" + addr + "/wsman"
	var open func(ctx context.Context) (net.Conn, error)
	switch {
	case t.NoTLS:
		addr = net.JoinHostPort(t.Addr, strconv.Itoa(PortHTTP))
		url = "http://" + addr + "/wsman"
		open = func(ctx context.Context) (net.Conn, error) { return dial(ctx, "tcp", addr) }
	case t.PKI != nil:
		// The device's setup certificate is its own, self-signed: there
		// is nothing to check it against (MeshCentral does not either).
		// The proof runs the other way, in the chain we present. The
		// server name is the address, as net/http would set it (no SNI
		// for an address).
		cfg := &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{*t.PKI}, ServerName: t.Addr,
			MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA, tls.TLS_RSA_WITH_AES_128_GCM_SHA256}}
		open = dialTLS(dial, addr, cfg)
	default:
		pid, key := t.PID, tlspsk.AMTKey(t.PPS)
		open = func(ctx context.Context) (net.Conn, error) {
			raw, err := dial(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			c := tlspsk.Client(raw, &tlspsk.Config{MinVersion: tlspsk.VersionTLS10, MaxVersion: tlspsk.VersionTLS12,
				CipherSuites: []uint16{tlspsk.TLS_PSK_WITH_AES_128_CBC_SHA, tlspsk.TLS_PSK_WITH_AES_256_CBC_SHA},
				Identity:     pid, Key: key, NoSecureRenegotiation: true})
			if err := c.Handshake(ctx); err != nil {
				raw.Close()
				return nil, fmt.Errorf("TLS-PSK as %s: %w", pid, err)
			}
			return c, nil
		}
	}
	oc := newOneConn(open)
	dc := &digest.Client{Username: "admin", Password: t.Password}
	return &Session{close: oc.Close, Digest: dc, WSMAN: &wsman.Client{HTTP: &http.Client{Transport: &digest.Transport{Client: dc, Base: oc, IgnoreStale: t.IgnoreStale}}, URL: url, Timeout: t.CallTimeout},
		pki: t.PKI != nil && !t.NoTLS, ignoreRV: t.IgnoreReturnValues}
}

// dialTLS is a session's open function for certificate TLS: it dials addr
// and shakes hands with cfg.
func dialTLS(dial func(ctx context.Context, network, addr string) (net.Conn, error), addr string, cfg *tls.Config) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		raw, err := dial(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		c := tls.Client(raw, cfg)
		if err := c.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, err
		}
		return c, nil
	}
}

// ErrConnectionLost: the setup session's connection closed mid-way. Its
// staged changes went with it, so the session is not carried on over a
// new connection (that committed half a transaction to a device that had
// been power-cycled); it fails, and the retry starts over.
var ErrConnectionLost = errors.New("the connection to the device closed mid-session (its staged changes are gone)")

// OpenOperational opens a session to a provisioned device: certificate TLS
// on 16993 checked against roots, Digest as user. Its calls take turns on
// one connection; once the device has closed it (a call that found it
// closed fails), the next call opens another.
func OpenOperational(t Target, roots *x509.CertPool, serverName, user, password string) *Session {
	dial := t.dialer()
	addr := net.JoinHostPort(t.Addr, strconv.Itoa(PortHTTPS))
	// Only the RSA suites AMT has, so no TLS 1.3: offering 1.3 would put
	// key shares (ML-KEM and X25519, made per handshake) in a ClientHello
	// whose suites cannot use them. The ClientHello is the one net/http's
	// Transport sent with this config (no ALPN: it offers h2 only when it
	// makes the config itself).
	cfg := &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA}}
	oc := newRedialConn(dialTLS(dial, addr, cfg))
	dc := &digest.Client{Username: user, Password: password}
	url := "https://" + addr + "/wsman"
	return &Session{tlsConf: cfg, close: oc.Close, Digest: dc, WSMAN: &wsman.Client{HTTP: &http.Client{Transport: &digest.Transport{Client: dc, Base: oc, IgnoreStale: t.IgnoreStale}}, URL: url, Timeout: t.CallTimeout}}
}

// invoke calls a method and turns a non-zero ReturnValue into a StepError.
func (s *Session) invoke(ctx context.Context, step, uri, method string, in *wsman.Instance, sel map[string]string) (*wsman.Instance, error) {
	out, err := s.WSMAN.Invoke(ctx, uri, method, sel, in)
	if err != nil {
		return nil, &StepError{Step: step, Err: err}
	}
	rv, err := out.Uint("ReturnValue")
	if err != nil {
		return nil, &StepError{Step: step, Err: err}
	}
	if rv != 0 && !s.ignoreRV {
		return out, &StepError{Step: step, Status: ptstatus.Code(rv)}
	}
	return out, nil
}

// Provision runs the provisioning transaction of docs/protocol.md §8 over one
// setup session and commits. onStep (may be nil) hears each step as it
// ends.
func Provision(ctx context.Context, t Target, p Profile, onStep func(StepResult)) (*Result, error) {
	s := OpenSetup(t)
	defer s.Close()
	return s.Provision(ctx, p, onStep)
}

// Provision runs the transaction on an open setup session.
func (s *Session) Provision(ctx context.Context, p Profile, onStep func(StepResult)) (*Result, error) {
	res := &Result{}
	now := p.Now
	if now == nil {
		now = time.Now
	}
	step := func(name string, f func() error) error {
		start := time.Now()
		err := f()
		sr := StepResult{Step: name, Duration: time.Since(start), Err: err}
		res.Steps = append(res.Steps, sr)
		if onStep != nil {
			onStep(sr)
		}
		if err != nil {
			var se *StepError
			if !errors.As(err, &se) {
				err = &StepError{Step: name, Err: err}
			}
			return err
		}
		return nil
	}
	var host, domain string
	err := step("login", func() error {
		gs, err := s.WSMAN.Get(ctx, wsman.GeneralSettings, nil)
		if err != nil {
			return err
		}
		res.Realm, _ = gs.Get("DigestRealm")
		host, _ = gs.Get("HostName")
		domain, _ = gs.Get("DomainName")
		sc, err := s.WSMAN.Get(ctx, wsman.SetupAndConfigurationService, nil)
		if err != nil {
			return err
		}
		if st, _ := sc.Get("ProvisioningState"); st != "1" && !(s.pki && st == "0") {
			return fmt.Errorf("device is not in setup (ProvisioningState %s)", st)
		}
		ids, err := s.WSMAN.Enumerate(ctx, wsman.SoftwareIdentity)
		if err != nil {
			return err
		}
		for _, in := range ids {
			if id, _ := in.Get("InstanceID"); id == "AMT" {
				res.Version, _ = in.Get("VersionString")
			}
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	if p.HostName != "" {
		host = p.HostName
	}
	if p.DomainName != "" {
		domain = p.DomainName
	}
	res.Host, res.Domain = host, domain
	steps := []struct {
		name string
		skip bool
		f    func() error
	}{
		{"set-pid-pps", p.NewPID == "", func() error {
			_, err := s.invoke(ctx, "set-pid-pps", wsman.SetupAndConfigurationService, "SetTLSPSK", (&wsman.Instance{}).Set("PID", p.NewPID).Set("PPS", p.NewPPS), nil)
			return err
		}},
		{"set-mebx-password", p.NewMEBxPassword == "", func() error {
			_, err := s.invoke(ctx, "set-mebx-password", wsman.SetupAndConfigurationService, "SetMEBxPassword", (&wsman.Instance{}).Set("Password", p.NewMEBxPassword), nil)
			return err
		}},
		{"set-admin", p.AdminUser == "", func() error {
			in := (&wsman.Instance{}).Set("Username", p.AdminUser).Set("DigestPassword", digest.DigestPassword(p.AdminUser, res.Realm, p.AdminPassword))
			_, err := s.invoke(ctx, "set-admin", wsman.AuthorizationService, "SetAdminAclEntryEx", in, nil)
			return err
		}},
		{"add-users", len(p.Users) == 0, func() error {
			for _, u := range p.Users {
				in := &wsman.Instance{}
				if u.Name != "" {
					in.Set("DigestUsername", u.Name).Set("DigestPassword", digest.DigestPassword(u.Name, res.Realm, u.Password))
				}
				if u.KerberosSID != "" {
					in.Set("KerberosUserSid", u.KerberosSID)
				}
				in.Set("AccessPermission", strconv.FormatUint(uint64(u.Access), 10))
				realms := make([]string, len(u.Realms))
				for i, r := range u.Realms {
					realms[i] = strconv.FormatUint(uint64(r), 10)
				}
				in.Set("Realms", realms...)
				if _, err := s.invoke(ctx, "add-users", wsman.AuthorizationService, "AddUserAclEntryEx", in, nil); err != nil {
					return err
				}
			}
			return nil
		}},
		{"set-time", false, func() error {
			out, err := s.invoke(ctx, "set-time", wsman.TimeSynchronizationService, "GetLowAccuracyTimeSynch", nil, nil)
			if err != nil {
				return err
			}
			ta0, _ := out.Get("Ta0")
			tm1 := strconv.FormatInt(now().Unix(), 10)
			tm2 := strconv.FormatInt(now().Unix(), 10)
			_, err = s.invoke(ctx, "set-time", wsman.TimeSynchronizationService, "SetHighAccuracyTimeSynch", (&wsman.Instance{}).Set("Ta0", ta0).Set("Tm1", tm1).Set("Tm2", tm2), nil)
			return err
		}},
		{"set-names", host == "" && domain == "", func() error {
			in := wsman.NewInstance(wsman.GeneralSettings).Set("HostName", host).Set("DomainName", domain)
			_, err := s.WSMAN.Put(ctx, in, nil)
			return err
		}},
		{"set-kerberos", p.Kerberos == nil, func() error {
			k := p.Kerberos
			spns := k.SPNs
			if len(spns) == 0 {
				spns = DefaultSPNs()
			}
			fqdn := host + "." + domain
			if domain == "" {
				fqdn = host
			}
			names := make([]string, len(spns))
			for i, n := range spns {
				names[i] = strings.ReplaceAll(n, "{fqdn}", fqdn)
			}
			in := wsman.NewInstance(wsman.KerberosSettingData).Set("KrbEnabled", "true").Set("RealmName", k.Realm).
				Set("ServicePrincipalName", names...).
				Set("KeyVersion", strconv.FormatUint(uint64(k.KeyVersion), 10)).Set("EncryptionAlgorithm", strconv.FormatUint(uint64(k.Encryption), 10)).
				Set("MasterKey", base64.StdEncoding.EncodeToString(k.MasterKey)).Set("MaximumClockTolerance", strconv.FormatUint(uint64(k.MaxClockSkew), 10))
			_, err := s.WSMAN.Put(ctx, in, nil)
			return err
		}},
		{"install-certificate", p.Certify == nil, func() error {
			der, err := s.installCertificate(ctx, p, host, domain)
			res.CertDER = der
			return err
		}},
		{"enable-tls", p.Certify == nil, func() error {
			in := wsman.NewInstance(wsman.TLSSettingData).Set("InstanceID", wsman.TLSSettingsNetwork).Set("Enabled", "true").
				Set("MutualAuthentication", "false").Set("AcceptNonSecureConnections", strconv.FormatBool(p.AcceptNonSecure))
			_, err := s.WSMAN.Put(ctx, in, map[string]string{"InstanceID": wsman.TLSSettingsNetwork})
			return err
		}},
		{"commit", false, func() error {
			_, err := s.invoke(ctx, "commit", wsman.SetupAndConfigurationService, "CommitChanges", nil, nil)
			return err
		}},
	}
	for _, st := range steps {
		if st.skip {
			continue
		}
		if err := step(st.name, st.f); err != nil {
			return res, err
		}
	}
	res.Committed = true
	return res, nil
}

// installCertificate puts a key pair in the device (AddKey, or
// GenerateKeyPair and read its public key back), has Certify issue the
// certificate, adds it and makes it the TLS credential.
func (s *Session) installCertificate(ctx context.Context, p Profile, host, domain string) ([]byte, error) {
	var pub *rsa.PublicKey
	if p.Key != nil {
		der, err := x509.MarshalPKCS8PrivateKey(p.Key)
		if err != nil {
			return nil, err
		}
		if _, err := s.invoke(ctx, "install-certificate", wsman.PublicKeyManagementService, "AddKey", (&wsman.Instance{}).Set("KeyBlob", base64.StdEncoding.EncodeToString(der)), nil); err != nil {
			return nil, err
		}
		pub = &p.Key.PublicKey
	} else {
		out, err := s.invoke(ctx, "install-certificate", wsman.PublicKeyManagementService, "GenerateKeyPair", (&wsman.Instance{}).Set("KeyAlgorithm", "0").Set("KeyLength", "2048"), nil)
		if err != nil {
			return nil, err
		}
		ref := out.Ref("KeyPair")
		if ref == nil {
			return nil, errors.New("GenerateKeyPair returned no KeyPair reference")
		}
		kp, err := s.WSMAN.Get(ctx, wsman.PublicPrivateKeyPair, ref.Selectors)
		if err != nil {
			return nil, err
		}
		v, _ := kp.Get("DERKey")
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("DERKey: %w", err)
		}
		if pub, err = x509.ParsePKCS1PublicKey(b); err != nil {
			return nil, fmt.Errorf("DERKey: %w", err)
		}
	}
	der, err := p.Certify(pub, host, domain)
	if err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	out, err := s.invoke(ctx, "install-certificate", wsman.PublicKeyManagementService, "AddCertificate", (&wsman.Instance{}).Set("CertificateBlob", base64.StdEncoding.EncodeToString(der)), nil)
	if err != nil {
		return nil, err
	}
	ref := out.Ref("CreatedCertificate")
	if ref == nil {
		return nil, errors.New("AddCertificate returned no certificate reference")
	}
	ctxIn := wsman.NewInstance(wsman.TLSCredentialContext).
		SetEPR("ElementInContext", wsman.EPR{Address: wsman.Anonymous, ResourceURI: ref.ResourceURI, Selectors: ref.Selectors}).
		SetEPR("ElementProvidingContext", wsman.EPR{Address: wsman.Anonymous, ResourceURI: wsman.TLSProtocolEndpointColl,
			Selectors: map[string]string{"ElementName": wsman.TLSEndpointCollection}})
	if _, err := s.WSMAN.Create(ctx, ctxIn); err != nil {
		return nil, err
	}
	return der, nil
}
