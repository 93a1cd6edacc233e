package wsman

// Resource URIs of the AMT 5 and CIM classes a provisioning SCS and basic
// management use (docs/protocol.md §8), and the fixed InstanceIDs they address.
// The device serves them and the SCS calls them; both name them here.
const (
	GeneralSettings              = AMTSchema + "AMT_GeneralSettings"
	SetupAndConfigurationService = AMTSchema + "AMT_SetupAndConfigurationService"
	AuthorizationService         = AMTSchema + "AMT_AuthorizationService"
	TimeSynchronizationService   = AMTSchema + "AMT_TimeSynchronizationService"
	PublicKeyManagementService   = AMTSchema + "AMT_PublicKeyManagementService"
	PublicPrivateKeyPair         = AMTSchema + "AMT_PublicPrivateKeyPair"
	PublicKeyCertificate         = AMTSchema + "AMT_PublicKeyCertificate"
	TLSCredentialContext         = AMTSchema + "AMT_TLSCredentialContext"
	TLSSettingData               = AMTSchema + "AMT_TLSSettingData"
	TLSProtocolEndpointColl      = AMTSchema + "AMT_TLSProtocolEndpointCollection"
	KerberosSettingData          = AMTSchema + "AMT_KerberosSettingData"
	EthernetPortSettings         = AMTSchema + "AMT_EthernetPortSettings"
	SoftwareIdentity             = CIMSchema + "CIM_SoftwareIdentity"
	AssociatedPowerManagement    = CIMSchema + "CIM_AssociatedPowerManagementService"
	PowerManagementService       = CIMSchema + "CIM_PowerManagementService"
	ComputerSystem               = CIMSchema + "CIM_ComputerSystem"
	HostBasedSetupService        = IPSSchema + "IPS_HostBasedSetupService"

	TLSSettingsNetwork    = "Intel(r) AMT 802.3 TLS Settings"
	TLSSettingsLocal      = "Intel(r) AMT LMS TLS Settings"
	TLSEndpointCollection = "TLSProtocolEndpointInstances Collection"
)
