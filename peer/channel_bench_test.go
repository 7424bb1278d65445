package peer_test

import (
	"context"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/virtutune/link/internal/peertest"
	"github.com/virtutune/link/peer"
)

// BenchmarkChannelModes compares ways of carrying chords over the data
// channel on an impaired vnet, with the relay made slow (200 ms each way) so
// that what is measured is the channel itself:
//
//	unordered-rto500 ordered:false, reliable, SCTP RTO capped at 500 ms (the client's choice)
//	unordered-rto200 ordered:false, reliable, SCTP RTO capped at 200 ms
//	unordered-0rtx   ordered:false, maxRetransmits:0, SCTP RTO capped at 500 ms
//	ordered-rto500   ordered, reliable, SCTP RTO capped at 500 ms
//	ordered-default  ordered, reliable, pion's SCTP RTO (1 s, doubling up to 60 s): the old behaviour
//
// Each iteration runs two scenarios with fresh peers: "lossy" (4 ± 3 ms, 2 %
// loss each way, a chord every 25 ms) reports the chords' p50 and p99, the
// share that the slow relay brought first (the channel was later than
// 200 ms) and how often the PC's link went down; "blackout" (UDP gone for
// 8 s, the WebSocket for 12 s, a chord every 100 ms) reports how long after
// UDP's return the last chord played during the blackout arrived (over the
// channel alone), and the p90 latency of those played after.
// Run: go test -run '^$' -bench ChannelModes -benchtime 1x -count 3 ./peer/
func BenchmarkChannelModes(b *testing.B) {
	none := uint16(0)
	modes := []struct {
		name    string
		ordered bool
		rtx     *uint16
		rtoMax  time.Duration
	}{
		{"unordered-rto500", false, nil, 500 * time.Millisecond},
		{"unordered-rto200", false, nil, 200 * time.Millisecond},
		{"unordered-0rtx", false, &none, 500 * time.Millisecond},
		{"ordered-rto500", true, nil, 500 * time.Millisecond},
		{"ordered-default", true, nil, 0},
	}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			restore := peer.SetChannelMode(m.ordered, m.rtx)
			defer restore()
			rto := func(se *webrtc.SettingEngine) { se.SetSCTPRTOMax(m.rtoMax) }
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				// lossy
				h := newImpairedWith(ctx, b, impairment{loss: 0.02, delay: time.Millisecond, jitter: 6 * time.Millisecond,
					wsBase: 200 * time.Millisecond}, rto)
				waitP2P(ctx, b, h.pc, h.phone)
				p := peertest.Play(ctx, h.phone, 25*time.Millisecond)
				waitFor(ctx, b, "300 chords", func() bool { return h.atPC.len() >= 300 })
				ds := h.finish(ctx, p)
				lat := latencies(ds)
				b.ReportMetric(float64(pct(lat, 0.5).Microseconds())/1000, "lossy-p50-ms")
				b.ReportMetric(float64(pct(lat, 0.99).Microseconds())/1000, "lossy-p99-ms")
				b.ReportMetric(100*float64(byPath(ds)["relay"])/float64(len(ds)), "lossy-relay-%")
				flaps := len(h.pcEvents.Matching(func(e peer.Event) bool { return e.Kind == peer.EventP2P && e.State == peer.LinkDown }))
				b.ReportMetric(float64(flaps), "lossy-downs")
				h.close()

				// blackout
				h = newImpairedWith(ctx, b, impairment{}, rto)
				waitP2P(ctx, b, h.pc, h.phone)
				p = peertest.Play(ctx, h.phone, 100*time.Millisecond)
				waitFor(ctx, b, "chords before", func() bool { return h.atPC.len() >= 10 })
				start := time.Now()
				h.lan.udpDead.Store(true)
				h.proxy.setBlack(true)
				waitFor(ctx, b, "UDP's return", func() bool { return time.Since(start) >= 8*time.Second })
				h.lan.udpDead.Store(false)
				back := time.Now()
				during := p.Count()
				waitFor(ctx, b, "the chords played during the blackout", func() bool { return h.atPC.len() >= during })
				b.ReportMetric(float64(time.Since(back).Milliseconds()), "blackout-catchup-ms")
				waitFor(ctx, b, "the WebSocket's return", func() bool { return time.Since(start) >= 12*time.Second })
				h.proxy.setBlack(false)
				ds = h.finish(ctx, p)
				lat = latencies(ds)
				var after []time.Duration
				for i, d := range ds {
					if !p.SentAt(int(d.Msg.Seq)).Before(back) {
						after = append(after, lat[i])
					}
				}
				b.ReportMetric(float64(pct(after, 0.9).Microseconds())/1000, "after-p90-ms")
				h.close()
				cancel()
			}
		})
	}
}
