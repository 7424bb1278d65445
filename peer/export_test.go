package peer

// BreakDirect closes the current peer connection to peer as if the direct
// path broke (pion notices and the client falls back to the relay). It
// reports whether there was one.
func (c *Client) BreakDirect(peer string) bool {
	c.mu.Lock()
	l := c.links[peer]
	if l == nil || l.pc == nil {
		c.mu.Unlock()
		return false
	}
	pc := l.pc
	c.mu.Unlock()
	_ = pc.Close()
	return true
}

// CutWebSocket closes the network connection under the current WebSocket
// without a close frame, as a lost Wi-Fi would. It reports whether there was one.
func (c *Client) CutWebSocket() bool {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return false
	}
	_ = conn.NetConn().Close()
	return true
}
