#!/bin/sh
# natkit-entry: configure a lab container's network from its environment, then run CMD or idle.
#
# Docker gives each container one address per network, an interface name by attach order (not
# guaranteed) and a default route via the host bridge. A natkit lab wants the topology's names,
# addresses and routes (toolkit.lab.topology), so toolkit.lab.docker.compose renders:
#   NATKIT_IFACES  one line per interface: DOCKER_IPV4 NAME CIDR [CIDR...]  - the interface that has
#                  DOCKER_IPV4 is renamed NAME, its docker address replaced by the CIDRs (v4 and v6)
#   NATKIT_ROUTES  one line per route: PREFIX [via GW] dev NAME  (ip route replace; v6 prefixes too)
#   NATKIT_NFT     an nftables ruleset (routers: NAT and filtering, the same rules as netns)
# Docker's own default route disappears with the rename, so a LAN host's only default route is the
# one via its router. When done it touches /run/natkit/ready; on any error it exits non-zero (the
# container stops and `docker logs` says why).
set -eu

log() { echo "natkit-entry: $*" >&2; }

if [ -n "${NATKIT_IFACES:-}" ]; then
    i=0
    # First pass: every listed interface gets a temporary name (a target name may be taken, eth0/eth1).
    echo "$NATKIT_IFACES" | while read -r dip name cidrs; do
        [ -n "$dip" ] || continue
        dev=$(ip -o -4 addr show | awk -v a="$dip" '{split($4, p, "/"); if (p[1] == a) print $2}')
        [ -n "$dev" ] || { log "no interface has $dip"; ip -o addr show >&2; exit 1; }
        ip link set dev "$dev" down
        ip link set dev "$dev" name "nk$i-$name" 2>/dev/null || ip link set dev "$dev" name "nktmp$i"
        i=$((i + 1))
    done
    i=0
    echo "$NATKIT_IFACES" | while read -r dip name cidrs; do
        [ -n "$dip" ] || continue
        tmp="nk$i-$name"
        ip link show "$tmp" >/dev/null 2>&1 || tmp="nktmp$i"
        ip link set dev "$tmp" name "$name"
        ip -4 addr flush dev "$name"
        for cidr in $cidrs; do
            case "$cidr" in
                *:*) ip -6 addr add "$cidr" dev "$name" nodad ;;
                *) ip -4 addr add "$cidr" dev "$name" ;;
            esac
        done
        ip link set dev "$name" up
        i=$((i + 1))
    done
fi

if [ -n "${NATKIT_ROUTES:-}" ]; then
    echo "$NATKIT_ROUTES" | while read -r prefix rest; do
        [ -n "$prefix" ] || continue
        case "$prefix" in
            *:*) ip -6 route replace "$prefix" $rest ;;
            *) ip -4 route replace "$prefix" $rest ;;
        esac
    done
fi

if [ -n "${NATKIT_NFT:-}" ]; then
    printf '%s\n' "$NATKIT_NFT" > /run/natkit.nft
    nft -f /run/natkit.nft
fi

mkdir -p /run/natkit && touch /run/natkit/ready
log "ready: $(ip -o -4 addr show | awk '$2 != "lo" {printf "%s=%s ", $2, $4}')"

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
# Idle as PID 1 and leave promptly on SIGTERM (docker stop), so tear-down takes no grace period.
trap 'exit 0' TERM INT
while :; do
    sleep 3600 &
    wait $! || true
done
