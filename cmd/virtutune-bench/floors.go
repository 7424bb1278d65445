package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
	"github.com/redis/go-redis/v9"
)

// Floors are this machine's bare one-way latencies of the building blocks,
// measured closed-loop like the product paths.
type Floors struct {
	// WSRelay: client A → a minimal gorilla relay server → client B.
	WSRelay *Latency `json:"ws_relay,omitempty"`
	// PionHalfRTT: half the round trip of a bare pion data channel on loopback.
	PionHalfRTT *Latency `json:"pion_half_rtt,omitempty"`
	// RedisHop: go-redis PUBLISH → a go-redis subscriber.
	RedisHop *Latency `json:"redis_hop,omitempty"`
	Errors   []string `json:"errors,omitempty"`
}

// floorMessage is about the size of a relayed chord change.
var floorMessage = []byte(`{"type":"chord_change","data":{"chord":"Am"},"from":"bench-phone-00001","seq":123,"off":456,"at":1718000000123.456}`)

// closedLoop runs n rounds of one(), each returning a latency, for at most d.
func closedLoop(ctx context.Context, n int, d time.Duration, one func() (time.Duration, error)) ([]time.Duration, error) {
	deadline := time.Now().Add(d)
	out := make([]time.Duration, 0, n)
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		l, err := one()
		if err != nil {
			return out, err
		}
		out = append(out, l)
	}
	return out, nil
}

// floorWSRelay measures a bare gorilla WebSocket relay hop in this process.
func floorWSRelay(ctx context.Context, n int, d time.Duration) ([]time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	up := websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096}
	bconn := make(chan *websocket.Conn, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/b", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		bconn <- c
	})
	mux.HandleFunc("/a", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		b := <-bconn
		defer b.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if b.WriteMessage(mt, msg) != nil {
				return
			}
		}
	})
	hs := &http.Server{Handler: mux}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	base := "ws://" + ln.Addr().String()
	dl := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	b, _, err := dl.DialContext(ctx, base+"/b", nil)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	a, _, err := dl.DialContext(ctx, base+"/a", nil)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	var sentAt atomic.Int64
	got := make(chan time.Duration, 1)
	go func() {
		for {
			_, _, err := b.ReadMessage()
			if err != nil {
				close(got)
				return
			}
			got <- time.Duration(time.Now().UnixNano() - sentAt.Load())
		}
	}()
	return closedLoop(ctx, n, d, func() (time.Duration, error) {
		sentAt.Store(time.Now().UnixNano())
		if err := a.WriteMessage(websocket.TextMessage, floorMessage); err != nil {
			return 0, err
		}
		select {
		case l, ok := <-got:
			if !ok {
				return 0, errors.New("relay closed")
			}
			return l, nil
		case <-time.After(5 * time.Second):
			return 0, errors.New("ws relay floor: message lost")
		}
	})
}

// loopbackAPI is a pion API restricted to loopback, as peer.Config.LoopbackOnly.
func loopbackAPI() *webrtc.API {
	var se webrtc.SettingEngine
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	return webrtc.NewAPI(webrtc.WithSettingEngine(se))
}

// floorPion measures the round trip of a bare pion data channel between two
// peer connections in this process, halved.
func floorPion(ctx context.Context, n int, d time.Duration) ([]time.Duration, error) {
	api := loopbackAPI()
	a, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	defer a.Close()
	b, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	defer b.Close()
	b.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(m webrtc.DataChannelMessage) { _ = dc.SendText(string(m.Data)) })
	})
	dc, err := a.CreateDataChannel("floor", nil)
	if err != nil {
		return nil, err
	}
	open := make(chan struct{})
	echo := make(chan struct{}, 1)
	dc.OnOpen(func() { close(open) })
	dc.OnMessage(func(webrtc.DataChannelMessage) { echo <- struct{}{} })
	if err := signalPair(a, b); err != nil {
		return nil, err
	}
	select {
	case <-open:
	case <-time.After(15 * time.Second):
		return nil, errors.New("pion floor: data channel did not open")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	msg := string(floorMessage)
	return closedLoop(ctx, n, d, func() (time.Duration, error) {
		t := time.Now()
		if err := dc.SendText(msg); err != nil {
			return 0, err
		}
		select {
		case <-echo:
			return time.Since(t) / 2, nil
		case <-time.After(5 * time.Second):
			return 0, errors.New("pion floor: echo lost")
		}
	})
}

// signalPair exchanges a's offer and b's answer, candidates included.
func signalPair(a, b *webrtc.PeerConnection) error {
	offer, err := a.CreateOffer(nil)
	if err != nil {
		return err
	}
	ga := webrtc.GatheringCompletePromise(a)
	if err := a.SetLocalDescription(offer); err != nil {
		return err
	}
	<-ga
	if err := b.SetRemoteDescription(*a.LocalDescription()); err != nil {
		return err
	}
	answer, err := b.CreateAnswer(nil)
	if err != nil {
		return err
	}
	gb := webrtc.GatheringCompletePromise(b)
	if err := b.SetLocalDescription(answer); err != nil {
		return err
	}
	<-gb
	return a.SetRemoteDescription(*b.LocalDescription())
}

// floorRedis measures go-redis PUBLISH → a subscriber's receipt.
func floorRedis(ctx context.Context, redisURL string, n int, d time.Duration) ([]time.Duration, error) {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, err
	}
	pub := redis.NewClient(opt)
	defer pub.Close()
	subc := redis.NewClient(opt)
	defer subc.Close()
	ch := fmt.Sprintf("bench-floor-%d", time.Now().UnixNano())
	sub := subc.Subscribe(ctx, ch)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription confirmation
		return nil, err
	}
	var sentAt atomic.Int64
	got := make(chan time.Duration, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer close(got)
		for {
			m, err := sub.ReceiveMessage(rctx)
			if err != nil {
				return
			}
			if strings.HasPrefix(m.Payload, "{") {
				got <- time.Duration(time.Now().UnixNano() - sentAt.Load())
			}
		}
	}()
	payload := string(floorMessage)
	return closedLoop(ctx, n, d, func() (time.Duration, error) {
		sentAt.Store(time.Now().UnixNano())
		if err := pub.Publish(ctx, ch, payload).Err(); err != nil {
			return 0, err
		}
		select {
		case l, ok := <-got:
			if !ok {
				return 0, errors.New("redis floor: subscriber ended")
			}
			return l, nil
		case <-time.After(5 * time.Second):
			return 0, errors.New("redis floor: message lost")
		}
	})
}
