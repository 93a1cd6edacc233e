package firmware

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/ptstatus"
	"github.com/amtsim/amtsim/wsman"
)

// FirmwareVersion is the AMT version an AMT 5 device reports
// (Profile.Version for the device's own generation).
const FirmwareVersion = "5.0.32"

// wsmanHandler is the WS-MAN front end onto one session.
type wsmanHandler struct{ s *session }

func unreachable(uri string) error {
	return wsman.FaultDestinationUnreachable("No route can be determined to reach " + uri)
}

func notSupported(action string) error { return wsman.FaultActionNotSupported(action) }

// ret is a method's output with its ReturnValue first.
func ret(st ptstatus.Code) *wsman.Instance {
	return (&wsman.Instance{}).Set("ReturnValue", strconv.FormatUint(uint64(st), 10))
}

func b2s(b bool) string { return strconv.FormatBool(b) }

func (h *wsmanHandler) Get(uri string, sel map[string]string) (*wsman.Instance, error) {
	if err := h.mayRead(uri); err != nil {
		return nil, err
	}
	v := h.s.view()
	d := h.s.d
	switch uri {
	case wsman.GeneralSettings:
		return d.generalSettings(&v), nil
	case wsman.SetupAndConfigurationService:
		return wsman.NewInstance(uri).
			Set("CreationClassName", "AMT_SetupAndConfigurationService").
			Set("ElementName", "Intel(r) AMT Setup and Configuration Service").
			Set("EnabledState", "5").
			Set("Name", "Intel(r) AMT Setup and Configuration Service").
			Set("PasswordModel", "1").
			Set("ProvisioningMode", strconv.Itoa(int(v.Mode))).
			Set("ProvisioningServerOTP", "").
			Set("ProvisioningState", strconv.Itoa(int(v.State))).
			Set("RequestedState", "12").
			Set("SystemCreationClassName", "CIM_ComputerSystem").
			Set("SystemName", "Intel(r) AMT").
			Set("ZeroTouchConfigurationEnabled", "true"), nil
	case wsman.TLSSettingData:
		id := sel["InstanceID"]
		if id == "" {
			id = wsman.TLSSettingsNetwork
		}
		if id != wsman.TLSSettingsNetwork && id != wsman.TLSSettingsLocal {
			return nil, wsman.FaultInvalidSelectors("No TLS settings " + id)
		}
		return tlsSettings(&v, id), nil
	case wsman.KerberosSettingData:
		return kerberos(&v), nil
	case wsman.EthernetPortSettings:
		return d.ethernetPort(&v), nil
	case wsman.AssociatedPowerManagement:
		return d.associatedPower(), nil
	case wsman.PublicPrivateKeyPair, wsman.PublicKeyCertificate, wsman.TLSCredentialContext, wsman.SoftwareIdentity:
		items, err := h.Enumerate(uri)
		if err != nil {
			return nil, err
		}
		for _, in := range items {
			if id, _ := in.Get("InstanceID"); id == sel["InstanceID"] {
				return in, nil
			}
		}
		if uri == wsman.TLSCredentialContext && len(items) == 1 {
			return items[0], nil
		}
		return nil, wsman.FaultInvalidSelectors("No instance with InstanceID " + sel["InstanceID"])
	case wsman.HostBasedSetupService:
		if !d.prof.HostBasedSetup {
			break // AMT 5 has no such class: DestinationUnreachable, as for any other
		}
		return d.hostBasedSetup(&v), nil
	case wsman.AuthorizationService, wsman.TimeSynchronizationService, wsman.PublicKeyManagementService, wsman.PowerManagementService:
		return wsman.NewInstance(uri).Set("CreationClassName", wsman.ClassName(uri)).Set("Name", "Intel(r) AMT "+wsman.ClassName(uri)[4:]).
			Set("SystemCreationClassName", "CIM_ComputerSystem").Set("SystemName", "Intel(r) AMT"), nil
	}
	return nil, unreachable(uri)
}

// domainName is the domain the device goes by: the one set in MEBx (or
// by an SCS), else the DHCP option 15 domain of its lease. (MED: Intel
// documents DomainName as "the Intel AMT domain name"; a device in DHCP
// mode with none set uses option 15 for its FQDN, and an SCS reading it
// can keep it.)
func (d *Device) domainName(v *mebx.Settings) string {
	if v.DomainName != "" || !v.DHCP {
		return v.DomainName
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.bound {
		return ""
	}
	return d.lease.Domain
}

func (d *Device) generalSettings(v *mebx.Settings) *wsman.Instance {
	return wsman.NewInstance(wsman.GeneralSettings).
		Set("AMTNetworkEnabled", "1").
		Set("DDNSPeriodicUpdateInterval", "1440").
		Set("DDNSTTL", "900").
		Set("DDNSUpdateByDHCPServerEnabled", "true").
		Set("DDNSUpdateEnabled", "false").
		Set("DHCPv6ConfigurationTimeout", "0").
		Set("DigestRealm", d.realm).
		Set("DomainName", d.domainName(v)).
		Set("ElementName", "Intel(r) AMT: General Settings").
		Set("HostName", v.HostName).
		Set("HostOSFQDN", "").
		Set("IdleWakeTimeout", "65535").
		Set("InstanceID", "Intel(r) AMT: General Settings").
		Set("NetworkInterfaceEnabled", "true").
		Set("PingResponseEnabled", "true").
		Set("PowerSource", "0").
		Set("PreferredAddressFamily", "0").
		Set("PresenceNotificationInterval", "0").
		Set("PrivacyLevel", "0").
		Set("RmcpPingResponseEnabled", "true").
		Set("SharedFQDN", "true").
		Set("WsmanOnlyMode", "false")
}

// hostBasedSetup is IPS_HostBasedSetupService (AMT 6.2 and later). A
// device provisioned by an SCS (PSK or a provisioning certificate) is in
// Admin Control Mode, 2; 0 before provisioning.
func (d *Device) hostBasedSetup(v *mebx.Settings) *wsman.Instance {
	mode := "0"
	if v.State == mebx.StatePost {
		mode = "2"
	}
	return wsman.NewInstance(wsman.HostBasedSetupService).
		Set("AllowedControlModes", "2", "1").
		Set("CertChainStatus", "0").
		Set("ConfigurationNonce", "").
		Set("CreationClassName", "IPS_HostBasedSetupService").
		Set("CurrentControlMode", mode).
		Set("ElementName", "Intel(r) AMT Host Based Setup Service").
		Set("EnabledState", "5").
		Set("Name", "Intel(r) AMT Host Based Setup Service").
		Set("RequestedState", "12").
		Set("SystemCreationClassName", "CIM_ComputerSystem").
		Set("SystemName", "Intel(r) AMT")
}

func tlsSettings(v *mebx.Settings, id string) *wsman.Instance {
	in := wsman.NewInstance(wsman.TLSSettingData).
		Set("ElementName", id).Set("InstanceID", id)
	if id == wsman.TLSSettingsNetwork {
		return in.Set("AcceptNonSecureConnections", b2s(v.AMT.TLSAcceptNonSecure)).
			Set("Enabled", b2s(v.AMT.TLSEnabled)).Set("MutualAuthentication", b2s(v.AMT.TLSMutualAuth))
	}
	return in.Set("AcceptNonSecureConnections", "true").Set("Enabled", "false").Set("MutualAuthentication", "false")
}

func kerberos(v *mebx.Settings) *wsman.Instance {
	a := &v.AMT
	return wsman.NewInstance(wsman.KerberosSettingData).
		Set("ElementName", "Intel(r) AMT: Kerberos Settings").
		Set("EncryptionAlgorithm", strconv.FormatUint(uint64(a.KerberosEncryption), 10)).
		Set("InstanceID", "Intel (r) AMT: Kerberos Settings").
		Set("KeyVersion", strconv.FormatUint(uint64(a.KerberosKeyVersion), 10)).
		Set("KrbEnabled", b2s(a.KerberosEnabled)).
		Set("MaximumClockTolerance", strconv.FormatUint(uint64(a.KerberosMaxClockSkew), 10)).
		Set("RealmName", a.KerberosRealm).
		Set("SupportedEncryptionAlgorithms", "0", "1", "2")
}

func (d *Device) ethernetPort(v *mebx.Settings) *wsman.Instance {
	var ip, mask, gw, dns1, dns2 string
	d.mu.Lock()
	if d.host != nil {
		if p := d.host.Prefix(); p.IsValid() {
			ip, mask = p.Addr().String(), net4Mask(p.Bits())
		}
	}
	lease, bound := d.lease, d.bound
	d.mu.Unlock()
	switch {
	case bound:
		if g := lease.Gateway(); g.IsValid() {
			gw = g.String()
		}
		if len(lease.DNS) > 0 {
			dns1 = lease.DNS[0].String()
		}
		if len(lease.DNS) > 1 {
			dns2 = lease.DNS[1].String()
		}
	case !v.DHCP:
		if v.Gateway.IsValid() {
			gw = v.Gateway.String()
		}
		if v.DNS1.IsValid() {
			dns1 = v.DNS1.String()
		}
		if v.DNS2.IsValid() {
			dns2 = v.DNS2.String()
		}
	}
	mac := strings.ReplaceAll(d.o.Identity.MAC.String(), ":", "-")
	return wsman.NewInstance(wsman.EthernetPortSettings).
		Set("DHCPEnabled", b2s(v.DHCP)).
		Set("DefaultGateway", gw).
		Set("ElementName", "Intel(r) AMT Ethernet Port Settings").
		Set("IPAddress", ip).
		Set("InstanceID", "Intel(r) AMT Ethernet Port Settings 0").
		Set("IpSyncEnabled", "false").
		Set("LinkIsUp", "true").
		Set("LinkPolicy", "1", "14").
		Set("MACAddress", mac).
		Set("PhysicalConnectionType", "0").
		Set("PrimaryDNS", dns1).
		Set("SecondaryDNS", dns2).
		Set("SharedDynamicIP", "true").
		Set("SharedMAC", "true").
		Set("SharedStaticIp", "false").
		Set("SubnetMask", mask)
}

func net4Mask(bits int) string {
	m := ^uint32(0) << (32 - bits)
	return fmt.Sprintf("%d.%d.%d.%d", m>>24, m>>16&0xff, m>>8&0xff, m&0xff)
}

// Host power states (CIM_AssociatedPowerManagementService.PowerState).
const (
	hostPowerOn  = 2
	hostPowerOff = 8
)

func (d *Device) associatedPower() *wsman.Instance {
	return wsman.NewInstance(wsman.AssociatedPowerManagement).
		Set("AvailableRequestedPowerStates", "2", "5", "8", "10").
		Set("PowerState", strconv.Itoa(int(d.hostPower.Load()))).
		SetEPR("ServiceProvided", wsman.EPR{Address: wsman.Anonymous, ResourceURI: wsman.PowerManagementService,
			Selectors: map[string]string{"CreationClassName": "CIM_PowerManagementService", "Name": "Intel(r) AMT Power Management Service",
				"SystemCreationClassName": "CIM_ComputerSystem", "SystemName": "Intel(r) AMT"}}).
		SetEPR("UserOfService", wsman.EPR{Address: wsman.Anonymous, ResourceURI: wsman.ComputerSystem,
			Selectors: map[string]string{"CreationClassName": "CIM_ComputerSystem", "Name": "ManagedSystem"}})
}

// mayRead refuses a user ACL entry a class outside its realms
// (classRealm); the admin reads everything.
func (h *wsmanHandler) mayRead(uri string) error {
	h.s.mu.Lock()
	admin, realms := h.s.admin, h.s.realms
	h.s.mu.Unlock()
	if admin || mayRead(realms, uri) {
		return nil
	}
	return wsman.FaultAccessDenied("The sender was not authorized to access the resource.")
}

// denied refuses a user ACL entry what only the admin may do: every
// change, and the methods of the services that hold credentials.
func (h *wsmanHandler) denied() error {
	h.s.mu.Lock()
	admin := h.s.admin
	h.s.mu.Unlock()
	if admin {
		return nil
	}
	return wsman.FaultAccessDenied("The sender was not authorized to access the resource.")
}

func (h *wsmanHandler) Put(uri string, sel map[string]string, in *wsman.Instance) (*wsman.Instance, error) {
	if err := h.denied(); err != nil {
		return nil, err
	}
	s := h.s
	var st ptstatus.Code
	switch uri {
	case wsman.GeneralSettings:
		v := s.view()
		host, domain := v.HostName, v.DomainName
		if x, ok := in.Get("HostName"); ok {
			host = x
		}
		if x, ok := in.Get("DomainName"); ok {
			domain = x
		}
		st = s.SetNames(host, domain)
	case wsman.TLSSettingData:
		if id, _ := in.Get("InstanceID"); id == wsman.TLSSettingsLocal || sel["InstanceID"] == wsman.TLSSettingsLocal {
			return h.Get(uri, map[string]string{"InstanceID": wsman.TLSSettingsLocal})
		}
		v := s.view()
		enabled, mutual, nonSecure := v.AMT.TLSEnabled, v.AMT.TLSMutualAuth, v.AMT.TLSAcceptNonSecure
		var err error
		if enabled, err = boolProp(in, "Enabled", enabled); err != nil {
			return nil, err
		}
		if mutual, err = boolProp(in, "MutualAuthentication", mutual); err != nil {
			return nil, err
		}
		if nonSecure, err = boolProp(in, "AcceptNonSecureConnections", nonSecure); err != nil {
			return nil, err
		}
		st = s.SetTLS(enabled, mutual, nonSecure)
	case wsman.KerberosSettingData:
		k := Kerberos{Realm: value(in, "RealmName")}
		var err error
		if k.Enabled, err = boolProp(in, "KrbEnabled", false); err != nil {
			return nil, err
		}
		for name, p := range map[string]*uint32{"KeyVersion": &k.KeyVersion, "EncryptionAlgorithm": &k.Encryption, "MaximumClockTolerance": &k.MaxClockSkew} {
			if x, ok := in.Get(name); ok {
				n, err := strconv.ParseUint(x, 10, 32)
				if err != nil {
					return nil, wsman.FaultSchemaValidation(name + " must be an unsigned integer")
				}
				*p = uint32(n)
			}
		}
		if x, ok := in.Get("MasterKey"); ok {
			b, err := base64.StdEncoding.DecodeString(x)
			if err != nil {
				return nil, wsman.FaultSchemaValidation("MasterKey must be base64")
			}
			k.MasterKey = b
		}
		st = s.SetKerberos(k)
	default:
		if _, err := h.Get(uri, sel); err != nil {
			return nil, err
		}
		return nil, notSupported(wsman.ActionPut)
	}
	h.s.d.call(h.s, "Put "+wsman.ClassName(uri), st)
	if st != ptstatus.Success {
		// AMT reports a refused Put as a fault carrying the status.
		return nil, &wsman.Fault{Code: "Sender", Subcode: "c:InvalidRepresentation", Reason: "The Put was refused: " + st.String(),
			Detail: fmt.Sprint(uint32(st))}
	}
	return h.Get(uri, sel)
}

func value(in *wsman.Instance, name string) string {
	v, _ := in.Get(name)
	return v
}

func boolProp(in *wsman.Instance, name string, def bool) (bool, error) {
	v, ok := in.Get(name)
	if !ok {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, wsman.FaultSchemaValidation(name + " must be true or false")
	}
	return b, nil
}

func (h *wsmanHandler) Create(uri string, in *wsman.Instance) (*wsman.EPR, error) {
	if err := h.denied(); err != nil {
		return nil, err
	}
	if uri != wsman.TLSCredentialContext {
		if _, err := h.Get(uri, nil); err != nil {
			return nil, err
		}
		return nil, notSupported(wsman.ActionCreate)
	}
	ref := in.Ref("ElementInContext")
	if ref == nil || ref.Selectors["InstanceID"] == "" {
		return nil, wsman.FaultSchemaValidation("ElementInContext must reference an AMT_PublicKeyCertificate")
	}
	st := h.s.SetTLSCertificate(ref.Selectors["InstanceID"])
	h.s.d.call(h.s, "Create AMT_TLSCredentialContext", st)
	if st != ptstatus.Success {
		return nil, &wsman.Fault{Code: "Sender", Subcode: "c:InvalidRepresentation", Reason: "The credential context was refused: " + st.String(),
			Detail: fmt.Sprint(uint32(st))}
	}
	return &wsman.EPR{Address: wsman.Anonymous, ResourceURI: wsman.TLSCredentialContext, Selectors: map[string]string{"InstanceID": ref.Selectors["InstanceID"]}}, nil
}

func (h *wsmanHandler) Delete(uri string, sel map[string]string) error {
	if err := h.denied(); err != nil {
		return err
	}
	switch uri {
	case wsman.TLSCredentialContext:
		st := h.s.ClearTLSCertificate()
		if st != ptstatus.Success {
			return wsman.FaultInvalidSelectors("No TLS credential context")
		}
		return nil
	case wsman.PublicKeyCertificate, wsman.PublicPrivateKeyPair:
		if _, err := h.Get(uri, sel); err != nil {
			return err
		}
		st := h.s.DeleteCredential(uri == wsman.PublicKeyCertificate, sel["InstanceID"])
		h.s.d.call(h.s, "Delete "+wsman.ClassName(uri), st)
		if st != ptstatus.Success {
			// AMT refuses to delete what TLS uses (consoles rely on it:
			// MeshCentral's clean-up tries every certificate).
			return &wsman.Fault{Code: "Sender", Subcode: "c:AccessDenied", Reason: "The credential is in use: " + st.String(),
				Detail: fmt.Sprint(uint32(st))}
		}
		return nil
	}
	if _, err := h.Get(uri, sel); err != nil {
		return err
	}
	return notSupported(wsman.ActionDelete)
}

func (h *wsmanHandler) Enumerate(uri string) ([]*wsman.Instance, error) {
	if err := h.mayRead(uri); err != nil {
		return nil, err
	}
	v := h.s.view()
	switch uri {
	case wsman.SoftwareIdentity:
		var out []*wsman.Instance
		prof := &h.s.d.prof
		for _, p := range [][2]string{{"Flash", prof.Version}, {"Netstack", prof.Version}, {"AMTApps", prof.Version},
			{"AMT", prof.Version}, {"Sku", "8"}, {"VendorID", "8086"}, {"Build Number", prof.Build}, {"Recovery Version", prof.Version},
			{"Recovery Build Num", prof.Build}, {"Legacy Mode", "False"}} {
			out = append(out, wsman.NewInstance(uri).Set("InstanceID", p[0]).Set("IsEntity", "true").Set("VersionString", p[1]))
		}
		return out, nil
	case wsman.PublicPrivateKeyPair:
		var out []*wsman.Instance
		for i := range v.AMT.Keys {
			kp := &v.AMT.Keys[i]
			pub := publicOf(kp)
			if pub == nil {
				continue
			}
			out = append(out, wsman.NewInstance(uri).Set("DERKey", base64.StdEncoding.EncodeToString(pub)).
				Set("ElementName", "Intel(r) AMT Key").Set("InstanceID", kp.ID))
		}
		return out, nil
	case wsman.PublicKeyCertificate:
		var out []*wsman.Instance
		for _, c := range v.AMT.Certs {
			in := wsman.NewInstance(uri).Set("ElementName", "Intel(r) AMT Certificate").Set("InstanceID", c.ID)
			if x, err := x509.ParseCertificate(c.DER); err == nil {
				in.Set("Issuer", x.Issuer.String()).Set("Subject", x.Subject.String())
				_, isRSA := x.PublicKey.(*rsa.PublicKey)
				in.Set("TrustedRootCertficate", b2s(x.IsCA && isRSA))
			}
			in.Set("X509Certificate", base64.StdEncoding.EncodeToString(c.DER))
			out = append(out, in)
		}
		return out, nil
	case wsman.TLSCredentialContext:
		if v.AMT.TLSCert == "" {
			return nil, nil
		}
		return []*wsman.Instance{wsman.NewInstance(uri).
			SetEPR("ElementInContext", wsman.EPR{Address: wsman.Anonymous, ResourceURI: wsman.PublicKeyCertificate, Selectors: map[string]string{"InstanceID": v.AMT.TLSCert}}).
			SetEPR("ElementProvidingContext", wsman.EPR{Address: wsman.Anonymous, ResourceURI: wsman.TLSProtocolEndpointColl, Selectors: map[string]string{"ElementName": wsman.TLSEndpointCollection}})}, nil
	case wsman.TLSSettingData:
		return []*wsman.Instance{tlsSettings(&v, wsman.TLSSettingsNetwork), tlsSettings(&v, wsman.TLSSettingsLocal)}, nil
	}
	in, err := h.Get(uri, nil)
	if err != nil {
		return nil, err
	}
	return []*wsman.Instance{in}, nil
}

func (h *wsmanHandler) Invoke(uri, method string, sel map[string]string, in *wsman.Instance) (*wsman.Instance, error) {
	if err := h.mayRead(uri); err != nil {
		return nil, err
	}
	s := h.s
	uintArg := func(name string) (uint32, error) {
		x, ok := in.Get(name)
		if !ok {
			return 0, wsman.FaultSchemaValidation(method + " needs " + name)
		}
		n, err := strconv.ParseUint(x, 10, 32)
		if err != nil {
			return 0, wsman.FaultSchemaValidation(name + " must be an unsigned integer")
		}
		return uint32(n), nil
	}
	blob := func(name string) ([]byte, error) {
		b, err := base64.StdEncoding.DecodeString(value(in, name))
		if err != nil || len(b) == 0 {
			return nil, wsman.FaultSchemaValidation(name + " must be base64")
		}
		return b, nil
	}
	switch uri {
	case wsman.SetupAndConfigurationService, wsman.AuthorizationService, wsman.PublicKeyManagementService:
		if err := h.denied(); err != nil {
			return nil, err
		}
	}
	var out *wsman.Instance
	var st ptstatus.Code
	switch uri + "/" + method {
	case wsman.SetupAndConfigurationService + "/SetTLSPSK":
		st = s.SetTLSPSK(value(in, "PID"), value(in, "PPS"))
	case wsman.SetupAndConfigurationService + "/SetMEBxPassword":
		st = s.SetMEBxPassword(value(in, "Password"))
	case wsman.SetupAndConfigurationService + "/CommitChanges":
		st = s.CommitChanges()
	case wsman.SetupAndConfigurationService + "/Unprovision":
		mode, err := uintArg("ProvisioningMode")
		if err != nil {
			return nil, err
		}
		if mode != 0 && mode != 1 && mode != 2 {
			st = ptstatus.InvalidParameter
			break
		}
		st = s.Unprovision(false)
	case wsman.SetupAndConfigurationService + "/PartialUnprovision":
		st = s.Unprovision(true)
	case wsman.AuthorizationService + "/SetAdminAclEntryEx":
		st = s.SetAdminACL(value(in, "Username"), value(in, "DigestPassword"))
	case wsman.AuthorizationService + "/GetAdminAclEntry":
		v := s.view()
		name := v.AMT.AdminName
		if name == "" {
			name = "admin"
		}
		out = ret(ptstatus.Success).Set("Username", name)
	case wsman.AuthorizationService + "/AddUserAclEntryEx":
		var realms []uint32
		for _, r := range in.All("Realms") {
			n, err := strconv.ParseUint(r, 10, 32)
			if err != nil {
				return nil, wsman.FaultSchemaValidation("Realms must be unsigned integers")
			}
			realms = append(realms, uint32(n))
		}
		access, err := uintArg("AccessPermission")
		if err != nil {
			return nil, err
		}
		var handle uint32
		handle, st = s.AddUserACL(value(in, "DigestUsername"), value(in, "DigestPassword"), value(in, "KerberosUserSid"), access, realms)
		if st == ptstatus.Success {
			out = ret(st).Set("Handle", strconv.FormatUint(uint64(handle), 10))
		}
	case wsman.AuthorizationService + "/EnumerateUserAclEntries":
		v := s.view()
		out = ret(ptstatus.Success).Set("TotalCount", strconv.Itoa(len(v.AMT.Users))).Set("HandlesCount", strconv.Itoa(len(v.AMT.Users)))
		var hs []string
		for _, u := range v.AMT.Users {
			hs = append(hs, strconv.FormatUint(uint64(u.Handle), 10))
		}
		out.Set("Handles", hs...)
	case wsman.AuthorizationService + "/RemoveUserAclEntry":
		hnd, err := uintArg("Handle")
		if err != nil {
			return nil, err
		}
		st = s.RemoveUserACL(hnd)
	case wsman.TimeSynchronizationService + "/GetLowAccuracyTimeSynch":
		out = ret(ptstatus.Success).Set("Ta0", strconv.FormatInt(s.Time(), 10))
	case wsman.TimeSynchronizationService + "/SetHighAccuracyTimeSynch":
		var t [3]int64
		for i, name := range []string{"Ta0", "Tm1", "Tm2"} {
			n, err := uintArg(name)
			if err != nil {
				return nil, err
			}
			t[i] = int64(n)
		}
		st = s.SetTime(t[0], t[1], t[2])
	case wsman.PublicKeyManagementService + "/GenerateKeyPair":
		alg, err := uintArg("KeyAlgorithm")
		if err != nil {
			return nil, err
		}
		bits, err := uintArg("KeyLength")
		if err != nil {
			return nil, err
		}
		var id string
		id, st = s.GenerateKeyPair(alg, bits)
		if st == ptstatus.Success {
			out = ret(st).SetEPR("KeyPair", wsman.EPR{Address: wsman.Anonymous, ResourceURI: wsman.PublicPrivateKeyPair, Selectors: map[string]string{"InstanceID": id}})
		}
	case wsman.PublicKeyManagementService + "/AddKey":
		b, err := blob("KeyBlob")
		if err != nil {
			return nil, err
		}
		var id string
		id, st = s.AddKey(b)
		if st == ptstatus.Success {
			out = ret(st).SetEPR("CreatedKey", wsman.EPR{Address: wsman.Anonymous, ResourceURI: wsman.PublicPrivateKeyPair, Selectors: map[string]string{"InstanceID": id}})
		}
	case wsman.PublicKeyManagementService + "/AddCertificate":
		b, err := blob("CertificateBlob")
		if err != nil {
			return nil, err
		}
		var id string
		id, st = s.AddCertificate(b)
		if st == ptstatus.Success {
			out = ret(st).SetEPR("CreatedCertificate", wsman.EPR{Address: wsman.Anonymous, ResourceURI: wsman.PublicKeyCertificate, Selectors: map[string]string{"InstanceID": id}})
		}
	case wsman.PowerManagementService + "/RequestPowerStateChange":
		ps, err := uintArg("PowerState")
		if err != nil {
			return nil, err
		}
		st = s.d.hostPowerChange(s, ps)
	default:
		if _, err := h.Get(uri, sel); err != nil {
			return nil, err
		}
		return nil, notSupported(uri + "/" + method)
	}
	if out == nil {
		out = ret(st)
	}
	s.d.call(s, method, st)
	return out, nil
}

// call reports one AMT call and its status.
func (d *Device) call(s *session, op string, st ptstatus.Code) {
	d.emit(event.AMTCall, "session", s.id, "op", op, "status", uint32(st))
}

// hostPowerChange is the simulated host's power button (RemoteControl and
// RequestPowerStateChange): on, off, cycle, reset. The ME stays up; the
// host's state is what changes.
//
// A power cycle or reset also restarts the device's boot sequence once
// the answer is out (Options.KeepMEOnHostReset keeps the ME up instead, as
// on a machine whose ME runs from standby power).
func (d *Device) hostPowerChange(s *session, state uint32) ptstatus.Code {
	cur := d.hostPower.Load()
	restart := false
	switch state {
	case 2: // on
		if cur == hostPowerOn {
			return ptstatus.NotPermitted
		}
		d.hostPower.Store(hostPowerOn)
	case 8: // off (hard)
		if cur == hostPowerOff {
			return ptstatus.NotPermitted
		}
		d.hostPower.Store(hostPowerOff)
	case 5, 10: // power cycle, master bus reset
		if cur == hostPowerOff && state == 10 {
			return ptstatus.NotPermitted
		}
		d.hostPower.Store(hostPowerOn)
		restart = true
	default:
		return ptstatus.InvalidParameter
	}
	d.emit(event.HostPower, "requested", state, "state", d.hostPower.Load())
	if restart && !d.o.KeepMEOnHostReset {
		s.mu.Lock()
		s.over = true
		s.after = func() { go func() { _ = d.PowerCycle() }() }
		s.mu.Unlock()
	}
	return ptstatus.Success
}
