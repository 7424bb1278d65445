package peer

import "github.com/pion/webrtc/v4"

// BreakDirect is DropDirect (kept for the package's own tests).
func (c *Client) BreakDirect(peer string) bool { return c.DropDirect(peer) }

// CutWebSocket is DropWebSocket (kept for the package's own tests).
func (c *Client) CutWebSocket() bool { return c.DropWebSocket() }

// SetChannelMode sets how new data channels carry messages (for the
// benchmark that compares the modes) and returns a function restoring it.
func SetChannelMode(ordered bool, maxRetransmits *uint16) (restore func()) {
	old := dataChannelInit
	dataChannelInit = func() *webrtc.DataChannelInit {
		o := ordered
		return &webrtc.DataChannelInit{Ordered: &o, MaxRetransmits: maxRetransmits}
	}
	return func() { dataChannelInit = old }
}
