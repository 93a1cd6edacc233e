package mebx

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// setter applies one KEY=VALUE to settings, the way its MEBx screen would.
type setter func(s *Settings, v string) error

var setters = map[string]setter{
	"password":    func(s *Settings, v string) error { return s.SetPassword(v) },
	"amt":         boolSetter(func(s *Settings) *bool { return &s.AMTEnabled }),
	"dhcp":        boolSetter(func(s *Settings) *bool { return &s.DHCP }),
	"ip":          addrSetter(func(s *Settings) *netip.Addr { return &s.IP }),
	"netmask":     addrSetter(func(s *Settings) *netip.Addr { return &s.Netmask }),
	"gateway":     addrSetter(func(s *Settings) *netip.Addr { return &s.Gateway }),
	"dns1":        addrSetter(func(s *Settings) *netip.Addr { return &s.DNS1 }),
	"dns2":        addrSetter(func(s *Settings) *netip.Addr { return &s.DNS2 }),
	"scs.address": addrSetter(func(s *Settings) *netip.Addr { return &s.SCSAddress }),
	"scs.port": func(s *Settings, v string) error {
		p, err := strconv.ParseUint(v, 10, 16)
		if err != nil || p == 0 {
			return fmt.Errorf("mebx: %w: scs.port %q is not a port number 1-65535", ErrInvalidSetting, v)
		}
		s.SCSPort = uint16(p)
		return nil
	},
	"scs.fqdn":          func(s *Settings, v string) error { s.SCSFQDN = v; return checkName("scs.fqdn", v, 191) },
	"hostname":          func(s *Settings, v string) error { s.HostName = v; return checkName("hostname", v, 63) },
	"domain":            func(s *Settings, v string) error { s.DomainName = v; return checkName("domain", v, 191) },
	"pki.remote_config": boolSetter(func(s *Settings) *bool { return &s.PKI.RemoteConfig }),
	"pki.dns_suffix":    func(s *Settings, v string) error { s.PKI.DNSSuffix = v; return checkName("pki.dns_suffix", v, 191) },
	"pki.scs_fqdn":      func(s *Settings, v string) error { s.SCSFQDN = v; return checkName("pki.scs_fqdn", v, 191) },
	"pki.hash": func(s *Settings, v string) error {
		h, err := ParseRootHash(v)
		if err != nil {
			return err
		}
		return s.PKI.AddHash(h)
	},
	"pki.hash.active":   func(s *Settings, v string) error { return s.PKI.SetActive(strings.TrimSpace(v), true) },
	"pki.hash.inactive": func(s *Settings, v string) error { return s.PKI.SetActive(strings.TrimSpace(v), false) },
	"pki.hash.delete":   func(s *Settings, v string) error { return s.PKI.DeleteHash(strings.TrimSpace(v)) },
	"mode": func(s *Settings, v string) error {
		switch strings.ToLower(v) {
		case "enterprise", "1":
			s.Mode = ModeEnterprise
		case "smb", "small-business", "2":
			s.Mode = ModeSmallBusiness
		default:
			return fmt.Errorf("mebx: %w: mode %q (want enterprise or smb)", ErrInvalidSetting, v)
		}
		return nil
	},
}

// Keys lists the keys Set accepts.
func Keys() []string {
	keys := []string{"pid", "pps"}
	for k := range setters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Set applies KEY=VALUE assignments in order, as typed into MEBx screens.
// pid= and pps= must come together and are entered as one PID/PPS pair. On
// error the settings are left unchanged.
func (s *Settings) Set(assignments ...string) error {
	next := *s
	var pid, pps *string
	for _, a := range assignments {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("mebx: %w: %q is not KEY=VALUE", ErrInvalidSetting, a)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		switch k {
		case "pid":
			pid = &v
			continue
		case "pps":
			pps = &v
			continue
		}
		set, ok := setters[k]
		if !ok {
			return fmt.Errorf("mebx: %w: unknown key %q (keys: %s)", ErrInvalidSetting, k, strings.Join(Keys(), ", "))
		}
		if err := set(&next, v); err != nil {
			return err
		}
	}
	if (pid == nil) != (pps == nil) {
		return fmt.Errorf("mebx: %w: pid and pps are entered together (pid=… pps=…)", ErrInvalidSetting)
	}
	if pid != nil {
		if err := next.SetPIDPPS(*pid, *pps); err != nil {
			return err
		}
	}
	if err := next.Validate(); err != nil {
		return err
	}
	*s = next
	return nil
}

func boolSetter(field func(*Settings) *bool) setter {
	return func(s *Settings, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			switch strings.ToLower(v) {
			case "on", "yes", "enabled":
				b = true
			case "off", "no", "disabled":
				b = false
			default:
				return fmt.Errorf("mebx: %w: %q is not on/off", ErrInvalidSetting, v)
			}
		}
		*field(s) = b
		return nil
	}
}

func addrSetter(field func(*Settings) *netip.Addr) setter {
	return func(s *Settings, v string) error {
		if v == "" {
			*field(s) = netip.Addr{}
			return nil
		}
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return fmt.Errorf("mebx: %w: %q is not an IPv4 address", ErrInvalidSetting, v)
		}
		*field(s) = a
		return nil
	}
}
