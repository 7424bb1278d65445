package peer

// Fault injection, for tests and benchmarks that run the client from outside
// this package (soak and fault tests, virtutune-bench). Neither method is
// needed by an application: the client recovers from what they do by itself.

// DropDirect closes the current peer connection to the member peer as if the
// direct path broke: pion notices, the client reports p2p_state down, falls
// back to the relay (which carried every message all along, so nothing needs
// replaying) and a fresh data channel is tried after backoff. It does not block on the
// network. It reports whether there was a peer connection to close.
func (c *Client) DropDirect(peer string) bool {
	c.mu.Lock()
	l := c.links[peer]
	if l == nil || l.cur == nil {
		c.mu.Unlock()
		return false
	}
	pc := l.cur.pc
	c.mu.Unlock()
	_ = pc.Close()
	return true
}

// DropWebSocket closes the network connection under the current WebSocket
// without a close frame, as a lost Wi-Fi would: the server sees the
// connection die (its disconnect grace applies) and the client reconnects
// with backoff and resumes. It reports whether there was a connection.
func (c *Client) DropWebSocket() bool {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return false
	}
	_ = conn.NetConn().Close()
	return true
}
