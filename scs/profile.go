package scs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// DefaultProfile is what the reference SCS configures unless told
// otherwise (`amtsim scs --print-profile` writes it): a new MEBx password,
// the admin, one Digest user and one Kerberos user (by SID), and domain
// ("" keeps each device's own). The passwords are public: they are for a
// simulator's lab, and a real deployment passes its own --profile.
func DefaultProfile(domain string) Profile {
	return Profile{AdminUser: "admin", AdminPassword: "Amtsim-Admin5!", NewMEBxPassword: "Amtsim-Mebx5!", DomainName: domain,
		Users: []User{
			{Name: "operator", Password: "Amtsim-Oper5!", Access: 2, Realms: []uint32{3, 5, 7, 13}},
			// S-1-5-21-1004336348-1177238915-682003330-512 (a domain's
			// Domain Admins), in the binary form AMT takes, base64.
			{KerberosSID: "AQUAAAAAAAUVAAAA3PTcO4M9K0aCi6YoAAIAAA==", Access: 2, Realms: []uint32{3, 5, 7, 13}},
		}}
}

// ProfileFile is the JSON form of a Profile (amtsim scs --profile).
type ProfileFile struct {
	AdminUser       string `json:"admin_user"`
	AdminPassword   string `json:"admin_password"`
	NewMEBxPassword string `json:"new_mebx_password"`
	// Domain given to the devices; "" keeps each device's own.
	Domain string `json:"domain"`
	// AcceptNonSecure keeps plain 16992 open beside TLS once provisioned.
	AcceptNonSecure bool          `json:"accept_non_secure"`
	Users           []User        `json:"users"`
	Kerberos        *KerberosFile `json:"kerberos,omitempty"`
}

// KerberosFile is the JSON form of Kerberos.
type KerberosFile struct {
	Realm        string `json:"realm"`
	KeyVersion   uint32 `json:"key_version"`
	Encryption   uint32 `json:"encryption"`
	MasterKey    []byte `json:"master_key"` // base64 in JSON
	MaxClockSkew uint32 `json:"max_clock_skew"`
}

// File is p in its JSON form.
func (p Profile) File() ProfileFile {
	f := ProfileFile{AdminUser: p.AdminUser, AdminPassword: p.AdminPassword, NewMEBxPassword: p.NewMEBxPassword,
		Domain: p.DomainName, AcceptNonSecure: p.AcceptNonSecure, Users: p.Users}
	if k := p.Kerberos; k != nil {
		f.Kerberos = &KerberosFile{Realm: k.Realm, KeyVersion: k.KeyVersion, Encryption: k.Encryption, MasterKey: k.MasterKey, MaxClockSkew: k.MaxClockSkew}
	}
	return f
}

// Profile is the profile the file describes. Fields it leaves empty take
// DefaultProfile's (admin_user, admin_password, users); an empty
// new_mebx_password keeps the devices' MEBx password.
func (f ProfileFile) Profile() Profile {
	p := DefaultProfile(f.Domain)
	if f.AdminUser != "" {
		p.AdminUser = f.AdminUser
	}
	if f.AdminPassword != "" {
		p.AdminPassword = f.AdminPassword
	}
	if f.Users != nil {
		p.Users = f.Users
	}
	p.NewMEBxPassword = f.NewMEBxPassword
	p.AcceptNonSecure = f.AcceptNonSecure
	if k := f.Kerberos; k != nil {
		p.Kerberos = &Kerberos{Realm: k.Realm, KeyVersion: k.KeyVersion, Encryption: k.Encryption, MasterKey: k.MasterKey, MaxClockSkew: k.MaxClockSkew}
	}
	return p
}

// ReadProfile reads a profile file; an unknown field is an error.
func ReadProfile(path string) (Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Profile{}, fmt.Errorf("scs: profile: %w", err)
	}
	p, err := ParseProfile(b)
	if err != nil {
		return Profile{}, fmt.Errorf("scs: profile %s: %w", path, err)
	}
	return p, nil
}

// ParseProfile reads a profile's JSON: one object, no unknown field,
// nothing after it.
func ParseProfile(b []byte) (Profile, error) {
	var f ProfileFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Profile{}, err
	}
	if dec.More() {
		return Profile{}, errors.New("more than one JSON value")
	}
	return f.Profile(), nil
}
