package cli

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/warrenmesh/warren/internal/relay/relayserver"
)

// relayLimits are the per-node limits of a relay, the standalone one
// (`warren relay --rate --burst --queue`) and the one embedded in the
// server (`warren server --relay-rate --relay-burst --relay-queue`, or
// relay_rate, relay_burst, relay_queue in its config file). A rate is
// opt-in: by default a relay forwards as fast as its nodes send, bounded
// only by the queue towards each node (and, at the listener, by the
// connections per source address).
type relayLimits struct {
	rate, burst string // byte sizes (parseByteSize); "" or "0": none / default
	queue       string // packets; "": relayserver.DefaultQueuePackets
}

// options parses the limits into the relay server's options.
func (l relayLimits) options(o *relayserver.Options, flagPrefix string) error {
	rate, err := parseByteSize(l.rate)
	if err != nil {
		return fmt.Errorf("--%srate: %v", flagPrefix, err)
	}
	burst, err := parseByteSize(l.burst)
	if err != nil {
		return fmt.Errorf("--%sburst: %v", flagPrefix, err)
	}
	if burst > 0 && rate == 0 {
		return fmt.Errorf("--%sburst needs --%srate (without a rate nothing is limited)", flagPrefix, flagPrefix)
	}
	queue := relayserver.DefaultQueuePackets
	if l.queue != "" {
		if queue, err = strconv.Atoi(l.queue); err != nil || queue <= 0 {
			return fmt.Errorf("--%squeue %q: want a positive number of packets", flagPrefix, l.queue)
		}
	}
	o.Rate, o.Burst, o.QueuePackets = rate, burst, queue
	return nil
}

// parseByteSize reads a non-negative byte count: digits with an optional
// suffix K, M or G (KiB, MiB, GiB; a trailing "iB" or "B" is accepted).
func parseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	num := strings.TrimRight(strings.TrimSuffix(strings.TrimSuffix(s, "B"), "i"), "KMGkmg")
	unit := strings.ToUpper(strings.TrimSuffix(strings.TrimSuffix(s, "B"), "i")[len(num):])
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || len(unit) > 1 {
		return 0, errors.New(strconv.Quote(s) + " is not a byte count (e.g. 50M: digits, optionally K, M or G for KiB, MiB, GiB)")
	}
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30}[unit]
	if n > (1<<62)>>shift {
		return 0, errors.New(strconv.Quote(s) + " is too large")
	}
	return n << shift, nil
}
