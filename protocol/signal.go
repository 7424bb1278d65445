package protocol

// Offers reports whether the member (selfRole, selfID) makes the offer to the
// member (peerRole, peerID). Exactly one of each pair offers, so glare cannot
// happen: the PC offers to a phone; between two members of the same role the
// one with the smaller client id offers. Renegotiation and ICE restarts are
// started by the offerer only; the answerer asks for one with rtc_restart.
func Offers(selfRole, selfID, peerRole, peerID string) bool {
	if selfRole != peerRole {
		return selfRole == RolePC
	}
	return selfID < peerID
}
