package scs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/negotiate"
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

// KerberosFile is the JSON form of Kerberos. It gives the AMT object's
// password or its key (master_key), not both.
type KerberosFile struct {
	Realm        string   `json:"realm"`
	SPNs         []string `json:"spn,omitempty"`
	KeyVersion   uint32   `json:"key_version"`
	Encryption   uint32   `json:"encryption"`
	MasterKey    []byte   `json:"master_key,omitempty"` // base64 in JSON
	Password     string   `json:"password,omitempty"`
	MaxClockSkew uint32   `json:"max_clock_skew"`
}

// File is p in its JSON form.
func (p Profile) File() ProfileFile {
	f := ProfileFile{AdminUser: p.AdminUser, AdminPassword: p.AdminPassword, NewMEBxPassword: p.NewMEBxPassword,
		Domain: p.DomainName, AcceptNonSecure: p.AcceptNonSecure, Users: p.Users}
	if k := p.Kerberos; k != nil {
		f.Kerberos = &KerberosFile{Realm: k.Realm, SPNs: k.SPNs, KeyVersion: k.KeyVersion, Encryption: k.Encryption, MasterKey: k.MasterKey,
			Password: k.Password, MaxClockSkew: k.MaxClockSkew}
		if k.Password != "" {
			f.Kerberos.MasterKey = nil // derived from the password
		}
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
		p.Kerberos = &Kerberos{Realm: k.Realm, SPNs: k.SPNs, KeyVersion: k.KeyVersion, Encryption: k.Encryption, MasterKey: k.MasterKey,
			Password: k.Password, MaxClockSkew: k.MaxClockSkew}
		if k.Password != "" && len(k.MasterKey) == 0 {
			if key, err := negotiate.KeyFromPassword(k.Password); err == nil {
				p.Kerberos.MasterKey = key
			}
		}
	}
	p.Users = resolveSIDs(p.Users, p.Kerberos)
	return p
}

// resolveSIDs gives each Kerberos user the base64 SID AMT takes: from an
// S-1-… string, or from a principal (negotiate.PrincipalSID). What does
// not parse is left as written, for Validate to name.
func resolveSIDs(users []User, k *Kerberos) []User {
	realm := ""
	if k != nil {
		realm = k.Realm
	}
	var out []User
	for i, u := range users {
		sid := u.KerberosSID
		if sid == "" && u.KerberosPrincipal != "" {
			if name, r, err := negotiate.ParsePrincipal(u.KerberosPrincipal, realm); err == nil {
				sid = negotiate.PrincipalSID(name, r).Base64()
			}
		} else if strings.HasPrefix(sid, "S-") {
			if s, err := negotiate.ParseSID(sid); err == nil {
				sid = s.Base64()
			}
		}
		if sid != u.KerberosSID {
			if out == nil {
				out = append([]User(nil), users...)
			}
			out[i].KerberosSID = sid
		}
	}
	if out == nil {
		return users
	}
	return out
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

// Validate checks the profile against the rules the device enforces, so
// that a profile every device would refuse is refused once, at start,
// with every problem named.
func (p *Profile) Validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if err := mebx.CheckUserName(p.AdminUser); err != nil {
		bad("admin_user: %v", err)
	}
	if err := mebx.CheckPassword(p.AdminPassword); err != nil {
		bad("admin_password: %v", err)
	}
	if p.NewMEBxPassword != "" {
		if err := mebx.CheckPassword(p.NewMEBxPassword); err != nil {
			bad("new_mebx_password: %v", err)
		}
	}
	if len(p.Users) > mebx.MaxUsers {
		bad("users: %d, and AMT holds %d", len(p.Users), mebx.MaxUsers)
	}
	seen := map[string]bool{p.AdminUser: true}
	for i, u := range p.Users {
		who := fmt.Sprintf("users[%d]", i)
		if u.Name == "" && u.KerberosSID == "" && u.KerberosPrincipal == "" {
			bad("%s: a user needs a name, a Kerberos SID or a Kerberos principal", who)
		}
		if u.KerberosSID != "" {
			if _, err := negotiate.ParseSID(u.KerberosSID); err != nil {
				bad("%s: kerberos_sid: %v", who, err)
			}
		}
		if u.KerberosPrincipal != "" {
			realm := ""
			if p.Kerberos != nil {
				realm = p.Kerberos.Realm
			}
			if name, r, err := negotiate.ParsePrincipal(u.KerberosPrincipal, realm); err != nil {
				bad("%s: kerberos_principal: %v", who, err)
			} else if u.KerberosSID != "" && u.KerberosSID != negotiate.PrincipalSID(name, r).Base64() {
				bad("%s: kerberos_sid is not the SID of kerberos_principal %s", who, u.KerberosPrincipal)
			}
		}
		if u.Name != "" {
			if err := mebx.CheckUserName(u.Name); err != nil {
				bad("%s: %v", who, err)
			} else if seen[u.Name] {
				bad("%s: %q is given twice (or is the admin)", who, u.Name)
			}
			seen[u.Name] = true
			if err := mebx.CheckPassword(u.Password); err != nil {
				bad("%s (%s): password: %v", who, u.Name, err)
			}
		}
		if u.Access > 2 {
			bad("%s: access %d is not 0 (local), 1 (network) or 2 (both)", who, u.Access)
		}
		for _, r := range u.Realms {
			if r < mebx.MinRealm || r > mebx.MaxRealm {
				bad("%s: realm %d is not %d to %d", who, r, mebx.MinRealm, mebx.MaxRealm)
			}
		}
	}
	if k := p.Kerberos; k != nil {
		if k.Realm == "" {
			bad("kerberos: no realm")
		}
		if len(k.MasterKey) != 16 {
			bad("kerberos: master_key is %d bytes; AMT takes a 16-byte key", len(k.MasterKey))
		} else if k.Password != "" {
			if key, err := negotiate.KeyFromPassword(k.Password); err != nil || !bytes.Equal(key, k.MasterKey) {
				bad("kerberos: master_key is not the key of password")
			}
		}
		if k.Encryption != 0 {
			bad("kerberos: encryption %d; AMT 5 has 0 (RC4-HMAC) only", k.Encryption)
		}
		if k.MaxClockSkew > 5 {
			bad("kerberos: max_clock_skew %d minutes; AMT allows at most 5", k.MaxClockSkew)
		}
		for _, n := range k.SPNs {
			if !strings.Contains(n, "/") {
				bad("kerberos: spn %q is not service/host", n)
			}
		}
	}
	if p.DomainName != "" && (len(p.DomainName) > 191 || strings.ContainsAny(p.DomainName, " /\\:")) {
		bad("domain %q is not a DNS domain of at most 191 characters", p.DomainName)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrBadProfile, strings.Join(errs, "; "))
	}
	return nil
}

// ErrBadProfile is a profile the devices would refuse.
var ErrBadProfile = errors.New("scs: profile the devices would refuse")
