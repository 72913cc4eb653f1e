/* Sealink's reconnect (KK) state machines, device and gateway, against an attacker on
   the radio: a model for spin (`make test` runs tests/test_model.py).

   What is modeled (docs/protocol.md, "Handshakes and their state machines"):
   - time: a device timer fires only when nothing is in flight (every frame sent has
     arrived or been lost, and was handled), so the attacker may act before, between
     and after the device's retransmissions;
   - the device: a KK handshake with fresh keys (instance h), message 1 repeated until
     answered; once established, a first frame under the new keys, then uplinks it
     repeats until acknowledged; a REJECT (unauthenticated) makes it start over, never
     stop;
   - the gateway: answers KK message 1 with a pending session (a repeat of the message
     it answered gets the same answer, another message 1 replaces the pending one);
     the pending session replaces the one in force only when a frame under its keys
     arrives; a frame it cannot open gets a REJECT; it may restart and lose every
     session;
   - the radio and the attacker: any frame may be lost; the attacker records frames and
     replays them (old KK message 1, old data), sends REJECTs, and restarts the
     gateway, within a budget of FAULTS actions: a fair radio lets frames through in
     the end.
   Keys are abstracted to handshake instances: a frame of instance k opens only under
   keys k, which only the device (which made k) and the gateway (which answered k) hold.

   Checked: no invalid end state (deadlock), and
     live: <>[] (device established on keys k and the gateway's session in force is k)
   i.e. whatever the attacker did, the device ends up with a session the gateway
   honors, and keeps it. */

#ifndef FAULTS
#define FAULTS 3   /* attacker actions: losses, replays, REJECTs, restarts */
#endif
#define MAXH (FAULTS + 3)  /* handshake instances the device may start */

mtype = { KK1, KK2, DATA, ACK, REJECT };

chan up = [1] of { mtype, byte };    /* device -> gateway: kind, key instance */
chan down = [1] of { mtype, byte };  /* gateway -> device */

byte faults = 0;

#define quiet (empty(up) && empty(down))

/* device */
byte h = 0;        /* the handshake instance it runs (its newest keys) */
bool est = false;  /* established on keys h */

/* gateway */
byte live = 0;     /* instance of the session in force (0: none) */
byte pend = 0;     /* instance of the pending KK (answered, not proven) */

/* what an eavesdropper recorded, for replays */
byte rec_kk1 = 0;
byte rec_data = 0;

/* A radio never blocks: a frame that finds the air busy (the channel full) is lost. */
inline send_up(kind, k) {
    atomic {
        if
        :: nfull(up) -> up!kind, k
        :: full(up) -> skip
        fi
    }
}

inline send_down(kind, k) {
    atomic {
        if
        :: nfull(down) -> down!kind, k
        :: full(down) -> skip
        fi
    }
}

proctype Device() {
    mtype kind;
    byte k;
start:
    if
    :: h < MAXH -> h++
    :: else -> goto out_of_instances
    fi;
    est = false;
    send_up(KK1, h);
handshaking:
    do
    :: down?kind, k ->
        if
        :: kind == KK2 && k == h ->
            est = true;
            send_up(DATA, h);  /* the first frame under the new keys */
            goto established
        :: kind == REJECT -> goto start
        :: else -> skip        /* not ours (another instance's answer, a replay) */
        fi
    :: atomic { quiet -> send_up(KK1, h) }   /* no answer: message 1 again */
    od;
established:
    do
    :: down?kind, k ->
        if
        :: kind == REJECT -> goto start
        :: else -> skip        /* ACKs, stale answers */
        fi
    :: atomic { quiet -> send_up(DATA, h) }  /* the next uplink, or a repeat */
    od;
out_of_instances:  /* more handshakes than the attacker's budget explains: the device
                      is going round in circles (the liveness check reports it) */
    do
    :: h > 0 -> h = h   /* (spin refuses an unconditional self-loop) */
    od
}

proctype Gateway() {
    mtype kind;
    byte k;
end:                                /* waiting for a frame is a fine place to stop */
    do
    :: atomic { up?kind, k ->
        if
#ifdef TRUST_KK1
        /* The gateway before Stage 6: a KK message 1 opens the session at once, and a
           frame it cannot open is dropped without a word. */
        :: kind == KK1 -> live = k; send_down(KK2, k)
        :: kind == DATA && k != 0 && k == live -> send_down(ACK, k)
        :: kind == DATA && (k == 0 || k != live) -> skip
#else
        :: kind == KK1 ->
            pend = k;               /* answered; replaces an older pending one */
            send_down(KK2, k)
        :: kind == DATA && k != 0 && k == pend ->
            live = k;               /* proven live: replaces the session in force */
            pend = 0;
            send_down(ACK, k)
        :: kind == DATA && k != 0 && k == live && k != pend ->
            send_down(ACK, k)
        :: kind == DATA && (k == 0 || (k != live && k != pend)) ->
            send_down(REJECT, 0)    /* keys it does not have: start over */
#endif
        fi }
    od
}

proctype Attacker() {
    mtype kind;
    byte k;
    do
    :: faults < FAULTS ->
        if
        :: up?[kind, k] -> up?kind, k; faults++      /* an uplink lost */
        :: down?[kind, k] -> down?kind, k; faults++  /* a downlink lost */
        :: rec_kk1 != 0 -> send_up(KK1, rec_kk1); faults++   /* replay */
        :: rec_data != 0 -> send_up(DATA, rec_data); faults++
        :: send_up(DATA, 0); faults++                /* forged: opens under no keys */
        :: send_down(REJECT, 0); faults++            /* forged REJECT */
        :: atomic { live = 0; pend = 0; faults++ }   /* the gateway restarts */
        fi
    :: h != 0 && rec_kk1 != h -> rec_kk1 = h         /* it hears everything */
    :: est && rec_data != h -> rec_data = h
    :: faults >= FAULTS -> break
    od
}

init {
    atomic {
        run Device();
        run Gateway();
        run Attacker()
    }
}

ltl live { <>[] (est && live == h) }
