/* Sealink's first contact (XX enrollment) state machines, device and gateway, against
   an attacker on the radio who can also answer as a rogue gateway: a model for spin
   (`make test` runs tests/test_model.py).  model/reconnect.pml covers the KK reconnect
   that follows.

   What is modeled (docs/protocol.md, "Handshakes and their state machines"):
   - the device: it was provisioned with the gateway's static key G and an enrollment
     token.  Each connect is a handshake instance h (fresh ephemeral key, fresh random
     first-contact session id).  It sends XX message 1 and repeats it until message 2
     comes; message 2 must carry G, or the device says nothing more on that instance
     (message 3, which carries the token, is never written) and starts over.  After
     message 3 it is "unconfirmed" and repeats message 3 until the credential comes.
     A handshake message it cannot read (an answer to somebody else's message 1 on its
     session id) fails the instance too; the device then starts over, never stops.
     Repeats are bounded (RETRIES, the channel's max_retries): then it starts over.
     A REJECT during a handshake changes nothing.
   - the gateway: answers XX message 1 on a free first-contact session id with message 2
     and keeps the half-open handshake; a copy of the message it answered gets the same
     answer; another message 1 on that id is dropped.  Message 3 under the half-open
     keys enrolls the device (spends the token; an enrolled key is let through again and
     only gets its credential again) and is answered with the credential; a copy of
     message 3 gets the same credential.  Message 3 it cannot read is dropped.  A
     half-open handshake expires; a restart loses every session, not the enrollment
     (the store keeps it).
   - the radio and the attacker: any frame may be lost; the attacker hears everything,
     replays the device's messages, squats the device's session id with its own XX
     message 1, answers message 1 as a rogue responder (its own static key R), forges
     REJECTs, expires half-open handshakes and restarts the gateway, within a budget of
     FAULTS actions.
   Keys are abstracted: a frame names the instance (session id and ephemeral keys) it
   belongs to and, for message 2, whose message 1 it answers and which static key it
   carries.

   Checked: no invalid end state (deadlock); the assertion that the token goes only to
   the gateway the device was provisioned for; and
     enrolls: [] token not leaked && <>[] (the device holds the credential of its
              instance h, and the gateway has its key enrolled)
   i.e. whatever the attacker did, first contact completes (and from there, the
   gateway's session may be lost again: model/reconnect.pml shows a session comes back).

   Two models of the code before Stage 6 must fail the same check:
   -DTRUST_ANY_RESPONDER, the device that took any responder's key (the token leaks);
   -DREFUSE_SPENT_TOKEN, the gateway that refused an enrolled key a second XX (a lost
   credential stranded the device). */

#ifndef FAULTS
#define FAULTS 4      /* attacker actions */
#endif
#define MAXH (FAULTS + 2)  /* handshake instances the device may start: each fault
                              costs at most one */

#ifdef TRUST_ANY_RESPONDER
#define trusted(key) true
#else
#define trusted(key) (key == G)  /* the gateway's key it was provisioned with */
#endif
#define RETRIES 2     /* repeats of a handshake message before the device starts over */

mtype = { XX1, XX2, XX3, CRED, REJECT };
mtype = { DEV, ATT, NOBODY };   /* whose XX message 1 (and half-open handshake) */
mtype = { G, R };               /* static keys: the gateway's, the rogue's */

chan up = [1] of { mtype, byte, mtype };          /* kind, instance, whose */
chan down = [1] of { mtype, byte, mtype, mtype }; /* kind, instance, answers whose, key */

byte faults = 0;

/* device */
byte h = 0;           /* its handshake instance */
bool done = false;    /* holds the credential of instance h */
bool token_leaked = false;

/* gateway, per instance (= first-contact session id) */
mtype ho[MAXH + 1];   /* half-open handshake on that id: whose message 1 (NOBODY: none) */
bool auth[MAXH + 1];  /* XX completed with the device's key, credential sent */
bool enrolled = false; /* the device's key is enrolled (the token is spent) */

inline send_up(kind, k, who) {
    atomic {
        if
        :: nfull(up) -> up!kind, k, who
        :: full(up) -> skip
        fi
    }
}

inline send_down(kind, k, who, key) {
    atomic {
        if
        :: nfull(down) -> down!kind, k, who, key
        :: full(down) -> skip
        fi
    }
}

/* A device timer fires when nothing is in flight: every frame sent has arrived or been
   lost, and everything that arrived has been handled. */
#define quiet (empty(up) && empty(down))

proctype Device() {
    mtype kind, who, key;
    byte k, tries;
start:
    atomic {
        if
        :: h < MAXH -> h++
        :: else -> goto out_of_instances
        fi;
        tries = 0;
        send_up(XX1, h, DEV)
    }
wait2:
    do
    :: atomic { down?kind, k, who, key ->
        if
        :: kind == XX2 && k == h && who == DEV && key == G ->
            tries = 0;
            send_up(XX3, h, DEV);   /* s, se, and the token */
            goto wait_credential
        :: kind == XX2 && k == h && who == DEV && key != G && trusted(key) ->
            token_leaked = true;    /* message 3 to the rogue: the token goes with it */
            goto end_pinned         /* and the device pinned the rogue */
        :: kind == XX2 && k == h && !(who == DEV && trusted(key)) ->
            goto start              /* not the gateway, or unreadable: start over */
        :: else -> skip             /* another instance, a REJECT, a replay */
        fi }
    :: atomic { quiet && tries < RETRIES -> tries++; send_up(XX1, h, DEV) }
    :: atomic { quiet && tries >= RETRIES -> goto start }
    od;
wait_credential:
    do
    :: atomic { down?kind, k, who, key ->
        if
        :: kind == CRED && k == h -> done = true; goto enrolled_
        :: else -> skip
        fi }
    :: atomic { quiet && tries < RETRIES -> tries++; send_up(XX3, h, DEV) }
    :: atomic { quiet && tries >= RETRIES -> goto start }
    od;
enrolled_:
end_enrolled:
    do
    :: down?kind, k, who, key -> skip   /* later traffic: model/reconnect.pml */
    od;
end_pinned:
    do
    :: down?kind, k, who, key -> skip
    od;
out_of_instances:  /* more restarts than the attacker's budget explains: the device is
                      going round in circles (the liveness check reports it) */
    do
    :: h > 0 -> h = h   /* (spin refuses an unconditional self-loop) */
    od
}

proctype Gateway() {
    mtype kind, who;
    byte k;
end:
    do
    :: atomic { up?kind, k, who ->
        if
        :: kind == XX1 && ho[k] == NOBODY && !auth[k] ->
            ho[k] = who;
            send_down(XX2, k, who, G)
        :: kind == XX1 && ho[k] == who ->
            send_down(XX2, k, who, G)      /* a copy of what it answered */
        :: kind == XX1 && (auth[k] || (ho[k] != NOBODY && ho[k] != who)) ->
            skip                           /* another message 1 on a taken id */
#ifdef REFUSE_SPENT_TOKEN
        /* The gateway before Stage 6: a token spent once is refused, even to the key
           it enrolled (whose credential was lost). */
        :: kind == XX3 && ho[k] == DEV && enrolled ->
            ho[k] = NOBODY
        :: kind == XX3 && ho[k] == DEV && !enrolled ->
#else
        :: kind == XX3 && ho[k] == DEV ->
#endif
            ho[k] = NOBODY;
            auth[k] = true;
            enrolled = true;               /* or, already enrolled: the same key */
            send_down(CRED, k, DEV, G)
        :: kind == XX3 && auth[k] ->
            send_down(CRED, k, DEV, G)     /* a copy of message 3: the same credential */
        :: kind == XX3 && !auth[k] && ho[k] != DEV ->
            skip                           /* no keys to read it with */
        :: kind == CRED || kind == XX2 || kind == REJECT -> skip
        fi }
    od
}

proctype Attacker() {
    mtype kind, who, key;
    byte k, i;
    do
    :: faults < FAULTS ->
        if
        :: atomic { up?[kind, k, who] -> up?kind, k, who; faults++ }        /* lost */
        :: atomic { down?[kind, k, who, key] -> down?kind, k, who, key; faults++ }
        :: atomic { h != 0 -> send_up(XX1, h, DEV); faults++ }   /* replays */
        :: atomic { h != 0 -> send_up(XX3, h, DEV); faults++ }
        :: atomic { h != 0 -> send_up(XX1, h, ATT); faults++ }   /* squats the id */
        :: atomic { h != 0 -> send_down(XX2, h, DEV, R); faults++ }  /* rogue answer */
        :: atomic { send_down(REJECT, h, NOBODY, G); faults++ }   /* forged REJECT */
        :: atomic { h != 0 && ho[h] != NOBODY -> ho[h] = NOBODY; faults++ } /* expiry */
        :: atomic {                                               /* gateway restart */
            i = 0;
            do
            :: i <= MAXH -> ho[i] = NOBODY; auth[i] = false; i++
            :: else -> break
            od;
            faults++ }
        fi
    :: faults >= FAULTS -> break
    od
}

init {
    byte i = 0;
    atomic {
        do
        :: i <= MAXH -> ho[i] = NOBODY; i++
        :: else -> break
        od;
        run Device();
        run Gateway();
        run Attacker()
    }
}

ltl enrolls { [] !token_leaked && <>[] (done && enrolled) }
