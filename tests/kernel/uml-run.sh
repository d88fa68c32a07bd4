#!/bin/bash
# uml-run.sh -- run pytest inside a user-mode-linux guest: a real Linux kernel with IPVS,
# dummy and veth, whatever the host kernel has. The guest's root is the host's / (hostfs),
# so it sees this checkout and its venv; everything it mounts (/run, /tmp-like dirs,
# /lib/modules) is private to the guest. Used by `make test-kernel`:
#
#     tests/kernel/uml-run.sh -- -q tests/kernel
#
# usage: uml-run.sh [-t TIMEOUT_S] [-m MEM] [-p PYTHON] [-e NAME]... [-L|-o] [-- PYTEST_ARGS...]
#        uml-run.sh [...] -c 'shell command'      run a shell command instead of pytest
#   -t  wall-clock limit for the whole guest (default 900 s; exit 124 on expiry)
#   -m  guest memory (default 1536M)
#   -p  python to run pytest with (default: .venv/bin/python of this checkout)
#   -e  NAME: pass the host environment variable NAME into the guest (repeatable)
#   -L  stream the guest console to stderr as it runs
#   -o  stream the command's own output (not the console) as it runs
# exit: pytest's (or the command's) exit code; 124 timeout; 125 the guest died first
#       (panic, OOM, boot failure); 126 user-mode-linux or kmod missing.
# needs (Debian, as root in CI): user-mode-linux kmod iproute2 (ipvsadm for benches).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TIMEOUT=900 MEM=1536M PY="" EXTRA_ENV="" LIVE=0 STREAM=0 COMMAND=""
MODULES="ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh dummy veth nf_conntrack"

while getopts "t:m:p:e:c:Loh" opt; do
  case $opt in
    t) TIMEOUT=$OPTARG ;;
    m) MEM=$OPTARG ;;
    p) PY=$OPTARG ;;
    e) EXTRA_ENV+=" $OPTARG" ;;
    c) COMMAND=$OPTARG ;;
    L) LIVE=1 ;;
    o) STREAM=1 ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift

die() { echo "uml-run: $1" >&2; exit "${2:-126}"; }

UML=$(command -v linux.uml) || die "linux.uml not found: apt-get install user-mode-linux"
KVER=$(ls /usr/lib/uml/modules 2>/dev/null | head -n1)
[ -n "$KVER" ] || die "/usr/lib/uml/modules/<version> missing: reinstall user-mode-linux"
MODPROBE=$(command -v modprobe || echo /sbin/modprobe)
[ -x "$MODPROBE" ] || die "modprobe not found: apt-get install kmod"
[ -n "$PY" ] || PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || PY=$(command -v "$PY") || die "python $PY not found (make install)"
# Absolute but NOT symlink-resolved: resolving a venv's python loses the venv.
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"

RUN=$(mktemp -d "${UML_RUN_DIR:-/tmp}/uml-run.XXXXXX") || die "cannot create a run directory" 125
trap 'rm -rf "$RUN"' EXIT
quote() { printf '%q ' "$@"; }

# The guest gets an allow-list of the host's environment, written into its init script
# (the kernel would pass unknown boot arguments to init as environment otherwise).
GUEST_ENV=""
for name in VIRTUAL_ENV PYTHONPATH LANG LC_ALL CI PYTEST_ADDOPTS $EXTRA_ENV; do
  [ -n "${!name:-}" ] && GUEST_ENV+="export $name=$(quote "${!name}")"$'\n'
done
if [ -n "$COMMAND" ]; then
  PAYLOAD="sh -c $(quote "$COMMAND")"
else
  PAYLOAD="$(quote "$PY" -m pytest -p no:cacheprovider "$@")"
fi

cat > "$RUN/init" <<EOF
#!/bin/sh
# PID 1 of the guest: must never exit (the guest kernel would panic).
export PATH=$(quote "$(dirname "$PY"):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
export HOME=/root TERM=dumb PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 UML_GUEST=1
$GUEST_ENV
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /dev/shm /dev/pts /run/netns /run/tmp /run/lock
mount -t tmpfs tmpfs /dev/shm
mount -t devpts devpts /dev/pts
export TMPDIR=/run/tmp
hostname uml-kernel-tests
ip link set lo up
# The guest kernel's modules live in /usr/lib/uml/modules: modprobe -d wants
# DIR/lib/modules/<version>, built on guest tmpfs; the kernel's own module autoloading
# (a scheduler asked for by name, say) goes through the same wrapper.
mkdir -p /run/umlmods/lib && ln -s /usr/lib/uml/modules /run/umlmods/lib/modules
echo $(quote "$RUN/modprobe") > /proc/sys/kernel/modprobe
for m in $MODULES; do $(quote "$RUN/modprobe") -q "\$m" || echo "uml-run: modprobe \$m failed" >&2; done
if cd $(quote "$ROOT"); then
  { $PAYLOAD; echo \$? > $(quote "$RUN/rc.tmp"); } 2>&1 | tee $(quote "$RUN/output.log") > /dev/console
  mv $(quote "$RUN/rc.tmp") $(quote "$RUN/rc")
fi
sync
echo o > /proc/sysrq-trigger
sleep 60
EOF
chmod +x "$RUN/init"
printf '#!/bin/sh\nexec %s -d /run/umlmods "$@"\n' "$(quote "$MODPROBE")" > "$RUN/modprobe"
chmod +x "$RUN/modprobe"

if [ "$LIVE" = 1 ]; then CONSOLE=/dev/stderr; else CONSOLE="$RUN/console.log"; fi
# timeout kills the whole process group (UML's helper threads too); stdin from /dev/null
# keeps UML from putting a terminal into raw mode (and CI has no terminal).
timeout --kill-after=10 "$TIMEOUT" "$UML" mem="$MEM" rootfstype=hostfs rootflags=/ rw \
  init="$RUN/init" loglevel=1 con=null con0=fd:0,fd:1 \
  umid="$(basename "$RUN")" uml_dir="$RUN" </dev/null >>"$CONSOLE" 2>&1 &
GUEST=$!
if [ "$STREAM" = 1 ]; then
  # The guest writes the output through hostfs; tail follows it, then reads it one last
  # time once the guest has gone.
  : >"$RUN/output.log"
  tail -n +1 -s 0.2 -F --pid="$GUEST" "$RUN/output.log" 2>/dev/null
fi
wait "$GUEST"
UML_RC=$?
[ "$LIVE" = 0 ] && [ "$STREAM" = 0 ] && [ -f "$RUN/output.log" ] && cat "$RUN/output.log"
if [ -f "$RUN/rc" ]; then
  exit "$(cat "$RUN/rc")"
fi
[ "$LIVE" = 0 ] && [ -f "$RUN/console.log" ] && tail -n 40 "$RUN/console.log" >&2
if [ "$UML_RC" = 124 ] || [ "$UML_RC" = 137 ]; then
  die "timed out after ${TIMEOUT}s" 124
fi
die "the guest ended without a result (linux.uml exit $UML_RC: panic, OOM or boot failure)" 125
