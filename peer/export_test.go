package peer

// BreakDirect is DropDirect (kept for the package's own tests).
func (c *Client) BreakDirect(peer string) bool { return c.DropDirect(peer) }

// CutWebSocket is DropWebSocket (kept for the package's own tests).
func (c *Client) CutWebSocket() bool { return c.DropWebSocket() }
