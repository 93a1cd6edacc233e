package firmware

import (
	"crypto/tls"
	"fmt"
	"sort"
	"strings"

	"github.com/amtsim/amtsim/hello"
	"github.com/amtsim/amtsim/mebx"
)

// Profile is a firmware generation as data: what one device model reports
// and allows. Every profile runs the same code; the fields below are the
// only places where generations differ.
type Profile struct {
	// Name is what --firmware takes.
	Name string
	// Description says which machines carry it.
	Description string
	// Version is the AMT version in the Server header, CIM_SoftwareIdentity
	// and EOI GetCoreVersion; Build its build number.
	Version, Build string
	// TLSMin and TLSMax bound every TLS on 16993.
	TLSMin, TLSMax uint16
	// PSK is TLS-PSK setup with PID/PPS (the version 2 Hello); removed from
	// later firmware, which provisions with certificates only.
	PSK bool
	// EOI is the legacy SOAP services (removed in AMT 9).
	EOI bool
	// HostBasedSetup is IPS_HostBasedSetupService (AMT 6.2 and later); an
	// AMT 5 device answers it as a class it does not have.
	HostBasedSetup bool
	// HelloWhenBoth is the Hello a device sends when both PID/PPS and
	// remote configuration are set up. Intel documents each Hello with its
	// own method but not the choice between them (docs/protocol.md §11,
	// open); PSK is the default, since PID/PPS is set per device by hand
	// and so says more about what IT meant than the factory's remote
	// configuration does.
	HelloWhenBoth hello.Version
	// RootHashes is the factory certificate hash table.
	RootHashes func() []mebx.RootHash
}

// AMT5 is the Dell OptiPlex 960's firmware: AMT 5.0 on the Q45 chipset,
// TLS 1.0 only, PSK and PKI setup, EOI and WS-MAN.
func AMT5() Profile {
	return Profile{
		Name:          "amt5",
		Description:   "Dell OptiPlex 960, Intel AMT 5.0 (Q45): TLS 1.0, PSK and PKI setup, EOI and WS-MAN",
		Version:       FirmwareVersion,
		Build:         "1152",
		TLSMin:        tls.VersionTLS10,
		TLSMax:        tls.VersionTLS10,
		PSK:           true,
		EOI:           true,
		HelloWhenBoth: hello.VersionPSK,
		RootHashes:    mebx.AMT5RootHashes,
	}
}

// AMT11 is a modern generation for today's SCSs: PKI setup only, TLS 1.2,
// SHA-256 factory hashes, IPS_HostBasedSetupService, no EOI.
func AMT11() Profile {
	return Profile{
		Name:           "amt11",
		Description:    "Intel AMT 11.8 (a 2017-era vPro desktop): TLS 1.2, PKI setup only, WS-MAN with IPS_HostBasedSetupService",
		Version:        "11.8.50",
		Build:          "3425",
		TLSMin:         tls.VersionTLS12,
		TLSMax:         tls.VersionTLS12,
		HostBasedSetup: true,
		HelloWhenBoth:  hello.VersionPKI,
		RootHashes:     mebx.ModernRootHashes,
	}
}

// Profiles are the firmware generations by name.
func Profiles() map[string]Profile {
	return map[string]Profile{"amt5": AMT5(), "amt11": AMT11()}
}

// ProfileNames lists the profiles' names, sorted.
func ProfileNames() []string {
	var out []string
	for n := range Profiles() {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ProfileByName returns the profile called name.
func ProfileByName(name string) (Profile, error) {
	p, ok := Profiles()[strings.ToLower(name)]
	if !ok {
		return Profile{}, fmt.Errorf("firmware: no profile %q (have %s)", name, strings.Join(ProfileNames(), ", "))
	}
	return p, nil
}

// ServerHeader is the Server header's value.
func (p *Profile) ServerHeader() string { return "Intel(R) Active Management Technology " + p.Version }

// Factory is a factory-fresh device of this generation's MEBx settings.
func (p *Profile) Factory() mebx.Settings { return mebx.Factory(p.RootHashes()) }

// helloVersion is the Hello settings s call for: PSK when PID/PPS is set
// (and the generation has PSK), PKI when remote configuration is ready,
// HelloWhenBoth when both are; 0 when the device sends none.
func (p *Profile) helloVersion(s *mebx.Settings) hello.Version {
	psk := p.PSK && sendsPSKHello(*s)
	pki := s.RemoteConfigReady()
	switch {
	case psk && pki:
		return p.HelloWhenBoth
	case psk:
		return hello.VersionPSK
	case pki:
		return hello.VersionPKI
	}
	return 0
}
