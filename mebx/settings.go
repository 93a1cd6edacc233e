// Package mebx is the Intel MEBx settings store of one device: factory
// defaults, the MEBx password policy, PID/PPS entry, the SCS address, DHCP or
// static TCP/IP settings, host and domain name, and the provisioning mode and
// state, with persistence that never half-writes.
//
// Settings is a plain struct; the rules the real MEBx enforces on entry live
// in its methods (SetPassword, SetPIDPPS, Set) and in Validate, which a store
// runs on every load so that a hand-edited file cannot smuggle in what the
// MEBx screens would refuse.
package mebx

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/amtsim/amtsim/identity"
)

// FactoryPassword is the MEBx password a new machine ships with.
const FactoryPassword = "admin"

// DefaultSCSPort is the port the Hello goes to when MEBx names none.
const DefaultSCSPort = 9971

// ProvisioningState is AMT's ProvisioningState.
type ProvisioningState int

// The provisioning states (docs/protocol.md §7).
const (
	StatePre  ProvisioningState = 0 // factory: no PID/PPS yet
	StateIn   ProvisioningState = 1 // setup: sends Hellos
	StatePost ProvisioningState = 2 // provisioned
)

func (s ProvisioningState) String() string {
	switch s {
	case StatePre:
		return "pre"
	case StateIn:
		return "in"
	case StatePost:
		return "post"
	}
	return fmt.Sprintf("ProvisioningState(%d)", int(s))
}

// ProvisioningMode is AMT's ProvisioningMode.
type ProvisioningMode int

// The provisioning modes.
const (
	ModeEnterprise    ProvisioningMode = 1
	ModeSmallBusiness ProvisioningMode = 2
)

func (m ProvisioningMode) String() string {
	switch m {
	case ModeEnterprise:
		return "enterprise"
	case ModeSmallBusiness:
		return "smb"
	}
	return fmt.Sprintf("ProvisioningMode(%d)", int(m))
}

// Errors of MEBx entry. They wrap, so callers test with errors.Is.
var (
	ErrWeakPassword     = errors.New("password does not meet the MEBx strong password policy")
	ErrFactoryPassword  = errors.New("the factory MEBx password must be changed first")
	ErrPIDFormat        = identity.ErrPIDFormat
	ErrPPSFormat        = identity.ErrPPSFormat
	ErrInvalidSetting   = errors.New("invalid setting")
	ErrInvalidStateMove = errors.New("invalid provisioning state change")
)

// Settings are the persisted MEBx settings of one device.
type Settings struct {
	// Password is the MEBx (and, before provisioning, the admin) password.
	Password   string `json:"password"`
	AMTEnabled bool   `json:"amt_enabled"`

	Mode  ProvisioningMode  `json:"provisioning_mode"`
	State ProvisioningState `json:"provisioning_state"`

	// PID and PPS are stored without dashes.
	PID string `json:"pid,omitempty"`
	PPS string `json:"pps,omitempty"`

	// SCS address typed into MEBx; zero when none. SCSFQDN is the PKI-era
	// "SCS FQDN" field, tried after the address.
	SCSAddress netip.Addr `json:"scs_address,omitzero"`
	SCSPort    uint16     `json:"scs_port"`
	SCSFQDN    string     `json:"scs_fqdn,omitempty"`

	DHCP    bool       `json:"dhcp"`
	IP      netip.Addr `json:"ip,omitzero"`
	Netmask netip.Addr `json:"netmask,omitzero"`
	Gateway netip.Addr `json:"gateway,omitzero"`
	DNS1    netip.Addr `json:"dns1,omitzero"`
	DNS2    netip.Addr `json:"dns2,omitzero"`

	HostName   string `json:"host_name,omitempty"`
	DomainName string `json:"domain_name,omitempty"`

	// FlashWrites counts persisted changes, for the flash wear-out quirk.
	FlashWrites uint64 `json:"flash_writes"`

	// PKI is the TLS PKI menu: remote configuration and its certificate
	// hashes. A store written before it existed loads with remote
	// configuration off.
	PKI PKI `json:"pki,omitzero"`

	// AMT is what an SCS configured (empty until provisioned).
	AMT AMTSettings `json:"amt,omitzero"`
}

// Defaults returns the settings of an AMT 5 machine fresh from the
// factory: Enterprise mode, DHCP, remote configuration on with AMT 5's
// factory certificate hashes (AMT 3.0 and later ship ready for it).
func Defaults() Settings { return Factory(AMT5RootHashes()) }

// Factory returns factory settings whose certificate hash table holds
// roots (a firmware generation's own set).
func Factory(roots []RootHash) Settings {
	return Settings{
		Password:   FactoryPassword,
		AMTEnabled: true,
		Mode:       ModeEnterprise,
		State:      StatePre,
		SCSPort:    DefaultSCSPort,
		DHCP:       true,
		PKI:        PKI{RemoteConfig: true, Hashes: roots},
	}
}

// RemoteConfigReady reports whether the settings let the device offer PKI
// remote configuration: AMT on, Enterprise mode, not provisioned, remote
// configuration on with at least one active hash.
func (s *Settings) RemoteConfigReady() bool {
	return s.AMTEnabled && s.Mode == ModeEnterprise && s.State != StatePost && s.PKI.RemoteConfig && s.PKI.anyActive()
}

// PasswordChanged reports whether the factory password has been replaced;
// the Hello's "admin credentials set" field follows it.
func (s *Settings) PasswordChanged() bool { return s.Password != FactoryPassword }

// SetPassword changes the MEBx password under the strong password policy.
func (s *Settings) SetPassword(p string) error {
	if err := CheckPassword(p); err != nil {
		return err
	}
	s.Password = p
	return nil
}

// SetPIDPPS enters a PID/PPS pair as the MEBx screen does: both are checked
// for format and checksums, the factory password must already be changed,
// and a device in factory mode moves into setup.
func (s *Settings) SetPIDPPS(pid, pps string) error {
	if !s.PasswordChanged() {
		return fmt.Errorf("mebx: set PID/PPS: %w", ErrFactoryPassword)
	}
	if s.State == StatePost {
		return fmt.Errorf("mebx: set PID/PPS: %w: device is provisioned; unprovision first", ErrInvalidStateMove)
	}
	p, err := identity.NormalizePID(pid)
	if err != nil {
		return fmt.Errorf("mebx: %w", err)
	}
	k, err := identity.NormalizePPS(pps)
	if err != nil {
		return fmt.Errorf("mebx: %w", err)
	}
	s.PID, s.PPS = p, k
	if s.State == StatePre {
		s.State = StateIn
	}
	return nil
}

// Validate checks settings that came from outside (a file, a fuzzer) against
// the rules entry would have enforced.
func (s *Settings) Validate() error {
	if s.Password != FactoryPassword {
		if err := CheckPassword(s.Password); err != nil {
			return err
		}
	}
	switch s.Mode {
	case ModeEnterprise, ModeSmallBusiness:
	default:
		return fmt.Errorf("mebx: %w: provisioning_mode %d (want 1 enterprise or 2 smb)", ErrInvalidSetting, int(s.Mode))
	}
	switch s.State {
	case StatePre, StateIn, StatePost:
	default:
		return fmt.Errorf("mebx: %w: provisioning_state %d (want 0, 1 or 2)", ErrInvalidSetting, int(s.State))
	}
	if s.PID != "" || s.PPS != "" {
		if p, err := identity.NormalizePID(s.PID); err != nil || p != s.PID {
			return fmt.Errorf("mebx: pid: %w", identity.ErrPIDFormat)
		}
		if p, err := identity.NormalizePPS(s.PPS); err != nil || p != s.PPS {
			return fmt.Errorf("mebx: pps: %w", identity.ErrPPSFormat)
		}
	}
	// Setup mode is entered by PID/PPS (a device provisioned by remote
	// configuration went from factory straight to provisioned, and may
	// have neither a PID nor a changed MEBx password).
	if s.State == StateIn && s.Mode == ModeEnterprise && s.PID == "" {
		return fmt.Errorf("mebx: %w: provisioning_state %s needs a PID and PPS in enterprise mode", ErrInvalidSetting, s.State)
	}
	if s.State == StateIn && !s.PasswordChanged() {
		return fmt.Errorf("mebx: %w: provisioning_state %s with the factory password", ErrInvalidSetting, s.State)
	}
	for name, a := range map[string]netip.Addr{"scs_address": s.SCSAddress, "ip": s.IP, "netmask": s.Netmask, "gateway": s.Gateway, "dns1": s.DNS1, "dns2": s.DNS2} {
		if a.IsValid() && !a.Is4() {
			return fmt.Errorf("mebx: %w: %s %s is not an IPv4 address", ErrInvalidSetting, name, a)
		}
	}
	if s.Netmask.IsValid() {
		if _, err := maskBits(s.Netmask); err != nil {
			return err
		}
	}
	if !s.DHCP && (!s.IP.IsValid() || !s.Netmask.IsValid()) {
		return fmt.Errorf("mebx: %w: static addressing (dhcp=false) needs ip and netmask", ErrInvalidSetting)
	}
	if s.SCSPort == 0 {
		return fmt.Errorf("mebx: %w: scs_port 0", ErrInvalidSetting)
	}
	if err := checkName("host_name", s.HostName, 63); err != nil {
		return err
	}
	if err := checkName("domain_name", s.DomainName, 191); err != nil {
		return err
	}
	if err := checkName("scs_fqdn", s.SCSFQDN, 191); err != nil {
		return err
	}
	if err := s.PKI.validate(); err != nil {
		return err
	}
	return s.AMT.validate()
}

// Prefix returns the static address with its mask as a prefix.
func (s *Settings) Prefix() (netip.Prefix, error) {
	bits, err := maskBits(s.Netmask)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(s.IP, bits), nil
}

func maskBits(m netip.Addr) (int, error) {
	if !m.Is4() {
		return 0, fmt.Errorf("mebx: %w: netmask %s is not IPv4", ErrInvalidSetting, m)
	}
	b := m.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := 0
	for v&0x80000000 != 0 {
		ones++
		v <<= 1
	}
	if v != 0 {
		return 0, fmt.Errorf("mebx: %w: netmask %s is not contiguous", ErrInvalidSetting, m)
	}
	return ones, nil
}

// checkName accepts DNS names (letters, digits, hyphen, dots between labels).
func checkName(field, s string, max int) error {
	if s == "" {
		return nil
	}
	if len(s) > max {
		return fmt.Errorf("mebx: %w: %s longer than %d characters", ErrInvalidSetting, field, max)
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			label++
		case c == '.' && label > 0:
			label = 0
		default:
			return fmt.Errorf("mebx: %w: %s %q has character %q at position %d", ErrInvalidSetting, field, s, c, i+1)
		}
		if label > 63 {
			return fmt.Errorf("mebx: %w: %s has a label longer than 63 characters", ErrInvalidSetting, field)
		}
	}
	return nil
}
