package firmware

import (
	"encoding/base64"
	"encoding/binary"
	"net/netip"
	"strconv"
	"strings"

	"github.com/amtsim/amtsim/eoi"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/ptstatus"
)

// The EOI front end: the legacy SOAP services at their URLs, onto the
// same session methods as WS-MAN. Parameter encodings the SDK pages leave
// open (docs/protocol.md §8) take both readings where they differ: PID and PPS
// as text or base64, booleans as true/false or 1/0.

// iana is Intel's IANA enterprise number, which RemoteControl names.
const iana = 343

// serveEOI answers one EOI request: an answer with a StatusCode, or a SOAP
// 1.1 fault (HTTP 500) for what cannot be read or is not a method.
func (d *Device) serveEOI(s *session, path string, body []byte) (int, []byte) {
	req, err := eoi.ParseRequest(path, body)
	if err != nil {
		d.Stats.BadRequests.Add(1)
		return 500, eoi.Fault("Client", err.Error())
	}
	f := eoiMethodFor(req.Service + "." + req.Method)
	if f == nil {
		return 500, eoi.Fault("Client", "Method '"+req.Method+"' not implemented in service "+req.Service)
	}
	if adminOnly(req.Service, req.Method) && !s.admin {
		d.call(s, req.Method, ptstatus.NotPermitted)
		return 200, (&eoi.Response{Service: req.Service, Method: req.Method, Status: uint32(ptstatus.NotPermitted)}).Marshal()
	}
	st, fields := f(s, req)
	d.call(s, req.Method, st)
	if st != ptstatus.Success {
		fields = nil
	}
	return 200, (&eoi.Response{Service: req.Service, Method: req.Method, Status: uint32(st), Fields: fields}).Marshal()
}

// adminOnly are the calls a user ACL entry may not make.
func adminOnly(service, method string) bool {
	switch service {
	case eoi.SecurityAdministration:
		return method != "GetCoreVersion"
	case eoi.NetworkAdministration, eoi.NetworkTime:
		return strings.HasPrefix(method, "Set")
	}
	return false
}

type eoiMethod func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field)

func ok(fields ...eoi.Field) (ptstatus.Code, []eoi.Field) { return ptstatus.Success, fields }

func status(st ptstatus.Code) (ptstatus.Code, []eoi.Field) { return st, nil }

func u32(v uint64) string { return strconv.FormatUint(v, 10) }

// textOrBase64 reads a PID or PPS: as typed (with or without dashes), or
// as base64 of the characters.
func textOrBase64(v string, normalize func(string) (string, error)) string {
	if n, err := normalize(v); err == nil {
		return n
	}
	if b, err := base64.StdEncoding.DecodeString(v); err == nil {
		return string(b)
	}
	return v
}

func parseBool(v string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "1":
		return true, true
	case "false", "0":
		return false, true
	}
	return false, false
}

// ip4 is the EOI encoding of an IPv4 address: a·2^24+b·2^16+c·2^8+d.
func ip4(a netip.Addr) string {
	if !a.Is4() {
		return "0"
	}
	b := a.As4()
	return u32(uint64(binary.BigEndian.Uint32(b[:])))
}

func parseIP4(v string) (netip.Addr, bool) {
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
	if err != nil {
		return netip.Addr{}, false
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(n))
	return netip.AddrFrom4(b), true
}

// eoiMethodFor returns the method "Service.Method", or nil. (A switch
// rather than a map: the methods reach back into the device, and a map
// literal of them would be an initialization cycle.)
func eoiMethodFor(key string) eoiMethod {
	switch key {
	case eoi.SecurityAdministration + ".GetCoreVersion":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			return ok(eoi.F("Version", s.d.prof.Version))
		}
	case eoi.GeneralInfo + ".GetCoreVersion":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			return ok(eoi.F("Version", s.d.prof.Version))
		}
	case eoi.GeneralInfo + ".GetCodeVersions":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			return ok(eoi.F("BiosVersion", "A05"),
				eoi.Field{Name: "Versions", Children: []eoi.Field{eoi.F("Description", "AMT"), eoi.F("Version", s.d.prof.Version)}},
				eoi.Field{Name: "Versions", Children: []eoi.Field{eoi.F("Description", "Flash"), eoi.F("Version", s.d.prof.Version)}})
		}
	case eoi.GeneralInfo + ".GetProvisioningMode":
		return getProvisioningMode
	case eoi.GeneralInfo + ".GetProvisioningState":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			v := s.view()
			return ok(eoi.F("ProvisioningState", strconv.Itoa(int(v.State))))
		}
	case eoi.SecurityAdministration + ".GetProvisioningMode":
		return getProvisioningMode
	case eoi.SecurityAdministration + ".GetDigestRealm":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			return ok(eoi.F("DigestRealm", s.d.realm))
		}
	case eoi.SecurityAdministration + ".SetTLSPSK":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			return status(s.SetTLSPSK(textOrBase64(r.Param("PID"), identity.NormalizePID), textOrBase64(r.Param("PPS"), identity.NormalizePPS)))
		}
	case eoi.SecurityAdministration + ".SetMEBxPassword":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			return status(s.SetMEBxPassword(r.Param("Password")))
		}
	case eoi.SecurityAdministration + ".SetAdminAclEntryEx":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			return status(s.SetAdminACL(r.Param("Username"), r.Param("DigestPassword")))
		}
	case eoi.SecurityAdministration + ".AddUserAclEntryEx":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			e := r.Params.Child("EntryEx")
			var name, dp, sid string
			entry := e.Child("DigestEntry")
			if entry != nil {
				name, dp = entry.Value("Username"), entry.Value("DigestPassword")
			} else if entry = e.Child("KerberosEntry"); entry != nil {
				sid = entry.Value("Sid")
			} else {
				return status(ptstatus.InvalidParameter)
			}
			access, err := strconv.ParseUint(entry.Value("AccessPermission"), 10, 32)
			if err != nil {
				return status(ptstatus.InvalidParameter)
			}
			var realms []uint32
			for _, v := range entry.Child("Realms").Values("RealmEntry") {
				n, err := strconv.ParseUint(v, 10, 32)
				if err != nil {
					return status(ptstatus.InvalidRealm)
				}
				realms = append(realms, uint32(n))
			}
			h, st := s.AddUserACL(name, dp, sid, uint32(access), realms)
			return st, []eoi.Field{eoi.F("Handle", u32(uint64(h)))}
		}
	case eoi.SecurityAdministration + ".SetTlsEnabled":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			net, ok1 := parseBool(r.Param("NetworkTlsEnabled"))
			if !ok1 {
				return status(ptstatus.InvalidParameter)
			}
			return status(s.SetTLS(net, false, !net))
		}
	case eoi.SecurityAdministration + ".SetTLSKeyAndCertificate":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			key, err1 := base64.StdEncoding.DecodeString(r.Param("PrivateKey"))
			certs := r.Params.Child("CertificateChain").Values("Certificate")
			if len(certs) == 0 {
				certs = r.Params.Values("CertificateChain")
			}
			if err1 != nil || len(certs) == 0 {
				return status(ptstatus.InvalidParameter)
			}
			cert, err := base64.StdEncoding.DecodeString(certs[0])
			if err != nil {
				return status(ptstatus.InvalidCert)
			}
			if _, st := s.AddKey(key); st != ptstatus.Success && st != ptstatus.Duplicate {
				return status(st)
			}
			id, st := s.AddCertificate(cert)
			if st != ptstatus.Success {
				return status(st)
			}
			return status(s.SetTLSCertificate(id))
		}
	case eoi.SecurityAdministration + ".SetKerberosOptions":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			o := r.Params.Child("KerberosOptions")
			if o == nil {
				return status(s.SetKerberos(Kerberos{}))
			}
			k := Kerberos{Enabled: true, Realm: o.Value("KerberosRealmName")}
			var err error
			if k.MasterKey, err = base64.StdEncoding.DecodeString(o.Value("KerberosMasterKey")); err != nil {
				return status(ptstatus.InvalidParameter)
			}
			for name, p := range map[string]*uint32{"KerberosKeyVersion": &k.KeyVersion, "KerberosEncryption": &k.Encryption, "KerberosMaximumClockTolerance": &k.MaxClockSkew} {
				if v := o.Value(name); v != "" {
					n, err := strconv.ParseUint(v, 10, 32)
					if err != nil {
						return status(ptstatus.InvalidParameter)
					}
					*p = uint32(n)
				}
			}
			return status(s.SetKerberos(k))
		}
	case eoi.SecurityAdministration + ".CommitChanges":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			return status(s.CommitChanges())
		}
	case eoi.SecurityAdministration + ".Unprovision":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			return status(s.Unprovision(false))
		}
	case eoi.SecurityAdministration + ".PartialUnprovision":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			return status(s.Unprovision(true))
		}
	case eoi.NetworkAdministration + ".GetHostName":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			v := s.view()
			return ok(eoi.F("HostName", v.HostName))
		}
	case eoi.NetworkAdministration + ".GetDomainName":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			v := s.view()
			return ok(eoi.F("DomainName", s.d.domainName(&v)))
		}
	case eoi.NetworkAdministration + ".SetHostName":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			v := s.view()
			return status(s.SetNames(r.Param("HostName"), v.DomainName))
		}
	case eoi.NetworkAdministration + ".SetDomainName":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			v := s.view()
			return status(s.SetNames(v.HostName, r.Param("DomainName")))
		}
	case eoi.NetworkAdministration + ".EnumerateInterfaces":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			return ok(eoi.F("InterfaceHandles", "0"))
		}
	case eoi.NetworkAdministration + ".GetInterfaceSettings":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			if r.Param("InterfaceHandle") != "0" {
				return status(ptstatus.InvalidIndex)
			}
			v := s.view()
			return ok(eoi.Field{Name: "InterfaceDescriptor", Children: s.d.interfaceDescriptor(&v)})
		}
	case eoi.NetworkAdministration + ".SetInterfaceSettings":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			if r.Param("InterfaceHandle") != "0" {
				return status(ptstatus.InvalidIndex)
			}
			desc := r.Params.Child("InterfaceDescriptor")
			if desc == nil {
				return status(ptstatus.InvalidParameter)
			}
			// DHCP unless IPv4 parameters are given: amttool sends no
			// DhcpEnabled, only InterfaceMode and, for static, addresses.
			dhcp := desc.Child("IPv4Parameters") == nil
			if v := desc.Value("DhcpEnabled"); v != "" {
				var okb bool
				if dhcp, okb = parseBool(v); !okb {
					return status(ptstatus.InvalidParameter)
				}
			}
			return status(s.change(func(m *mebx.Settings) ptstatus.Code {
				m.DHCP = dhcp
				if !dhcp {
					p := desc.Child("IPv4Parameters")
					var good [5]bool
					m.IP, good[0] = parseIP4(p.Value("LocalAddress"))
					m.Netmask, good[1] = parseIP4(p.Value("SubnetMask"))
					m.Gateway, good[2] = parseIP4(p.Value("DefaultGatewayAddress"))
					m.DNS1, good[3] = parseIP4(p.Value("PrimaryDnsAddress"))
					m.DNS2, good[4] = parseIP4(p.Value("SecondaryDnsAddress"))
					if !good[0] || !good[1] {
						return ptstatus.InvalidIPAddress
					}
				}
				if err := m.Validate(); err != nil {
					return ptstatus.InvalidNetmask
				}
				return ptstatus.Success
			}))
		}
	case eoi.RemoteControl + ".GetSystemPowerState":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			st := "0" // S0
			if s.d.hostPower.Load() == hostPowerOff {
				st = "5" // S5
			}
			return ok(eoi.F("SystemPowerState", st))
		}
	case eoi.RemoteControl + ".GetRemoteControlCapabilities":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			return ok(eoi.F("IanaOemNumber", u32(iana)), eoi.F("OemDefinedCapabilities", "0"),
				eoi.F("SpecialCommandsSupported", "7942"), eoi.F("SystemCapabilitiesSupported", "15"), eoi.F("SystemFirmwareCapabilities", "63487"))
		}
	case eoi.RemoteControl + ".RemoteControl":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			if r.Param("IanaOemNumber") != u32(iana) {
				return status(ptstatus.InvalidParameter)
			}
			cmd := map[string]uint32{"16": 10, "17": 2, "18": 8, "19": 5}[r.Param("Command")]
			if cmd == 0 {
				return status(ptstatus.InvalidParameter)
			}
			return status(s.d.hostPowerChange(s, cmd))
		}
	case eoi.NetworkTime + ".GetLowAccuracyTimeSynch":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			return ok(eoi.F("Ta0", strconv.FormatInt(s.Time(), 10)))
		}
	case eoi.NetworkTime + ".SetHighAccuracyTimeSynch":
		return func(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
			var t [3]int64
			for i, n := range []string{"Ta0", "Tm1", "Tm2"} {
				v, err := strconv.ParseInt(r.Param(n), 10, 64)
				if err != nil {
					return status(ptstatus.InvalidParameter)
				}
				t[i] = v
			}
			return status(s.SetTime(t[0], t[1], t[2]))
		}
	}
	return nil
}

func getProvisioningMode(s *session, r *eoi.Request) (ptstatus.Code, []eoi.Field) {
	v := s.view()
	return ok(eoi.F("ProvisioningMode", strconv.Itoa(int(v.Mode))), eoi.F("LegacyMode", "false"))
}

func (d *Device) interfaceDescriptor(v *mebx.Settings) []eoi.Field {
	var ip, gw, dns1, dns2 netip.Addr
	mask := netip.Addr{}
	d.mu.Lock()
	if d.host != nil {
		if p := d.host.Prefix(); p.IsValid() {
			ip = p.Addr()
			mask, _ = netip.ParseAddr(net4Mask(p.Bits()))
		}
	}
	lease, bound := d.lease, d.bound
	d.mu.Unlock()
	if bound {
		gw = lease.Gateway()
		if len(lease.DNS) > 0 {
			dns1 = lease.DNS[0]
		}
		if len(lease.DNS) > 1 {
			dns2 = lease.DNS[1]
		}
	} else {
		gw, dns1, dns2 = v.Gateway, v.DNS1, v.DNS2
	}
	dhcp := "false"
	if v.DHCP {
		dhcp = "true"
	}
	return []eoi.Field{
		eoi.F("HardwareAddressDescription", "Intel(R) 82566DM Gigabit Network Connection"),
		eoi.F("MACAddress", strings.ReplaceAll(d.o.Identity.MAC.String(), ":", "-")),
		eoi.F("InterfaceMode", "SHARED_MAC_ADDRESS"),
		eoi.F("LinkPolicy", "31"),
		eoi.F("DhcpEnabled", dhcp),
		{Name: "IPv4Parameters", Children: []eoi.Field{
			eoi.F("LocalAddress", ip4(ip)), eoi.F("SubnetMask", ip4(mask)), eoi.F("DefaultGatewayAddress", ip4(gw)),
			eoi.F("PrimaryDnsAddress", ip4(dns1)), eoi.F("SecondaryDnsAddress", ip4(dns2)),
		}},
	}
}
