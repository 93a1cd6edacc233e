package mebx

import (
	"crypto/md5"
	"fmt"
	"slices"
)

// AMTSettings is what an SCS configures over the network. It is empty on a
// device that has never been provisioned, changes only at CommitChanges
// (or an unprovision), and is persisted with the MEBx settings, so that one
// atomic write covers both.
type AMTSettings struct {
	// AdminName and AdminHA1 are the admin ACL entry (SetAdminAclEntryEx).
	// Until it is set the admin logs in as "admin" with the MEBx password.
	AdminName string `json:"admin_name,omitempty"`
	AdminHA1  []byte `json:"admin_ha1,omitempty"`
	// Users are the user ACL entries (AddUserAclEntryEx).
	Users []ACLEntry `json:"users,omitempty"`

	// Keys and Certs are the key pairs and certificates the SCS added or
	// had generated (PKCS#8 and X.509 DER); TLSCert names the certificate
	// 16993 serves once TLS is enabled.
	Keys    []KeyPair     `json:"keys,omitempty"`
	Certs   []Certificate `json:"certs,omitempty"`
	TLSCert string        `json:"tls_cert,omitempty"`

	TLSEnabled           bool   `json:"tls_enabled,omitempty"`
	TLSMutualAuth        bool   `json:"tls_mutual_auth,omitempty"`
	TLSAcceptNonSecure   bool   `json:"tls_accept_non_secure,omitempty"`
	KerberosEnabled      bool   `json:"kerberos_enabled,omitempty"`
	KerberosRealm        string `json:"kerberos_realm,omitempty"`
	KerberosKeyVersion   uint32 `json:"kerberos_key_version,omitempty"`
	KerberosEncryption   uint32 `json:"kerberos_encryption,omitempty"`
	KerberosMasterKey    []byte `json:"kerberos_master_key,omitempty"`
	KerberosMaxClockSkew uint32 `json:"kerberos_max_clock_skew,omitempty"`

	// ClockOffset is AMT's clock minus the host's, in seconds, as set by
	// SetHighAccuracyTimeSynch.
	ClockOffset int64 `json:"clock_offset,omitempty"`
	// TimeSet records that the SCS has set the clock.
	TimeSet bool `json:"time_set,omitempty"`
	// Audit is the provisioning record of the last commit.
	Audit *ProvisioningRecord `json:"audit,omitempty"`
}

// ACLEntry is a user: a Digest name and H(A1), a Kerberos SID, or both.
type ACLEntry struct {
	Handle      uint32 `json:"handle"`
	Name        string `json:"name,omitempty"`
	HA1         []byte `json:"ha1,omitempty"`
	KerberosSID string `json:"kerberos_sid,omitempty"`
	// Access is where the user may log in from: 0 local, 1 network, 2 both.
	Access uint32 `json:"access"`
	// Realms are the AMT realms (interfaces) the user may use.
	Realms []uint32 `json:"realms,omitempty"`
}

// KeyPair is an RSA key pair AMT holds, by InstanceID.
type KeyPair struct {
	ID  string `json:"id"`
	DER []byte `json:"der"` // PKCS#8 private key
	// Public is the PKCS#1 public key, kept beside the private one so that
	// listing keys and matching certificates need not parse private keys.
	Public []byte `json:"public,omitempty"`
}

// Certificate is an X.509 certificate AMT holds, by InstanceID.
type Certificate struct {
	ID  string `json:"id"`
	DER []byte `json:"der"`
}

// ProvisioningRecord is what the device remembers of its provisioning.
type ProvisioningRecord struct {
	Time    int64  `json:"time"` // AMT clock, seconds since 1970
	Peer    string `json:"peer"` // the SCS's address
	TLS     bool   `json:"tls"`  // over TLS (false: Digest on 16992)
	Session uint64 `json:"session"`
	// Method is how the SCS proved itself: psk (PID/PPS), pki (a
	// provisioning certificate) or digest (the MEBx password on 16992).
	Method string `json:"method,omitempty"`
	// CertCN and CertRoot name a pki SCS's certificate and the hash table
	// entry its root matched.
	CertCN   string `json:"cert_cn,omitempty"`
	CertRoot string `json:"cert_root,omitempty"`
}

// Clone returns a deep copy, so that a staged copy never shares slices
// with the committed one.
func (a AMTSettings) Clone() AMTSettings {
	c := a
	c.AdminHA1 = slices.Clone(a.AdminHA1)
	c.KerberosMasterKey = slices.Clone(a.KerberosMasterKey)
	c.Users = make([]ACLEntry, len(a.Users))
	for i, u := range a.Users {
		u.HA1 = slices.Clone(u.HA1)
		u.Realms = slices.Clone(u.Realms)
		c.Users[i] = u
	}
	if len(a.Users) == 0 {
		c.Users = nil
	}
	c.Keys = slices.Clone(a.Keys)
	c.Certs = slices.Clone(a.Certs)
	if a.Audit != nil {
		r := *a.Audit
		c.Audit = &r
	}
	return c
}

// validate checks what a file may hold.
func (a *AMTSettings) validate() error {
	if a.AdminHA1 != nil && len(a.AdminHA1) != md5.Size {
		return fmt.Errorf("mebx: %w: admin_ha1 of %d bytes", ErrInvalidSetting, len(a.AdminHA1))
	}
	if (a.AdminName == "") != (a.AdminHA1 == nil) {
		return fmt.Errorf("mebx: %w: admin_name and admin_ha1 go together", ErrInvalidSetting)
	}
	seen := map[uint32]bool{}
	for _, u := range a.Users {
		if seen[u.Handle] {
			return fmt.Errorf("mebx: %w: user handle %d twice", ErrInvalidSetting, u.Handle)
		}
		seen[u.Handle] = true
		if u.HA1 != nil && len(u.HA1) != md5.Size {
			return fmt.Errorf("mebx: %w: user %d ha1 of %d bytes", ErrInvalidSetting, u.Handle, len(u.HA1))
		}
		if u.Name == "" && u.KerberosSID == "" {
			return fmt.Errorf("mebx: %w: user %d has neither a name nor a Kerberos SID", ErrInvalidSetting, u.Handle)
		}
	}
	if a.TLSCert != "" && !slices.ContainsFunc(a.Certs, func(c Certificate) bool { return c.ID == a.TLSCert }) {
		return fmt.Errorf("mebx: %w: tls_cert %q is not among the certificates", ErrInvalidSetting, a.TLSCert)
	}
	return nil
}
