package shardhost

// QueuedLen reports the mutations waiting in every active shard's mailbox.
func QueuedLen(h *Host) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, a := range h.actors {
		select {
		case <-a.ready:
			if a.err == nil {
				n += len(a.mailbox)
			}
		default:
		}
	}
	return n
}
