package firmware

import (
	"slices"

	"github.com/amtsim/amtsim/wsman"
)

// AMT's realms (AMT_AuthorizationService's Realms), those the classes
// this firmware serves fall under.
const (
	realmPTAdministration = 3  // "access to all realms": reads everything
	realmRemoteControl    = 5  // power
	realmNetworkTime      = 12 // the clock
	realmGeneralInfo      = 13 // names, versions, state
)

// classRealm is the realm a user ACL entry needs to read a class or call
// its methods. Intel's class-to-realm table is not at hand
// (docs/protocol.md §12): this follows the realms' documented purposes,
// and whatever it does not name needs PT Administration. Changes (Put,
// Create, Delete) and the credential services' methods stay the admin's
// whatever a user's realms (wsmanHandler.denied).
var classRealm = map[string]uint32{
	wsman.GeneralSettings:              realmGeneralInfo,
	wsman.SoftwareIdentity:             realmGeneralInfo,
	wsman.SetupAndConfigurationService: realmGeneralInfo,
	wsman.PowerManagementService:       realmRemoteControl,
	wsman.AssociatedPowerManagement:    realmRemoteControl,
	wsman.TimeSynchronizationService:   realmNetworkTime,
}

// mayRead says whether a user with realms may read class uri or call its
// methods.
func mayRead(realms []uint32, uri string) bool {
	if slices.Contains(realms, realmPTAdministration) {
		return true
	}
	r, ok := classRealm[uri]
	return ok && slices.Contains(realms, r)
}
