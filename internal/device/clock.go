package device

import "github.com/warrenmesh/warren/internal/clock"

// Clock is the engine's source of time (package clock). Tests drive a
// virtual clock to check the protocol's timers (rekey at 120 s, reject at
// 180 s, zeroing at 540 s) without waiting.
type Clock = clock.Clock

// Timer is a resettable one-shot timer.
type Timer = clock.Timer
