// The one shell script the gateway runs on an instance to find, start, check and stop VNC desktops.
//
// It is a constant: it is sent on stdin to `sh -s -- <subcommand> <args>` and no user text is ever part of
// it or of its arguments (remoteCommand() only accepts tokens the desktop service produced and validated).
// The per-session VNC password is the one variable part: a generated [A-Za-z0-9]{8} value put in front of
// the script on stdin, so it never appears in argv (`ps`) on the instance.
//
// Layout on the instance: /tmp/clouddesk-<uid>/ (mode 0700, ours, not a symlink) holds, per desktop,
// <N>-<PID>.sock (the RFB Unix socket, 0600), <N>-<PID>.xauth, <N>-<PID>.passwd (tcp only) and <N>-<PID>.log,
// where PID is its Xvnc's; start-<token>.* while a start runs (start-<token>.pid stays for abort); and
// xfce-<plain|keep>-bin/, the session-only programs of xfce sessions. /tmp keeps the socket path far below
// the 108-byte sun_path limit; XDG_RUNTIME_DIR is not used because logind removes it when the user's last
// login (our SSH exec) ends.
//
// Exit codes the desktop service relies on: 0 ok, 10 no TigerVNC, 11 desktop environment missing, 12 display
// taken, 13 Xvnc died at start, 14 other failure, 15 not ready in time.
import { desktopEnvironments } from './desktop-environments.js';

const deCases = Object.entries(desktopEnvironments)
  .map(([id, spec]) => {
    const companion: readonly string[] = 'companion' in spec ? spec.companion : [];
    const args: readonly string[] = 'companionArgs' in spec ? spec.companionArgs : [];
    const cands = spec.commands.map((c) => c.join(' ')).join(' ');
    return `    ${id}) _cands='${cands}'; _comps='${companion.join(' ')}'; _compargs='${args.join(' ') || '-'}' ;;`;
  })
  .join('\n');

// Session-only changes for xfce (docs/desktop-setup.md says what each saves), made by putting a folder of
// CloudDesk's first in the session's PATH — never through xfconf: a value xfconf is made to override (a
// locked system default) is dropped from the user's own file the next time xfconfd saves that channel.
// xfce4-session starts xfwm4 and xfdesktop by name, so the session gets:
// - xfwm4: the real one with --compositor=off, so CopyRect works and nothing is redrawn through a
//   compositor;
// - xfdesktop (plain background only): a solid colour on the root window instead of the wallpaper (and
//   without desktop icons); it stays running, as xfce4-session expects of xfdesktop.
const deIds = Object.keys(desktopEnvironments).join(' ');

const PLAIN_BACKGROUND = '#2e3440';
const XFWM4_WRAPPER = `#!/bin/sh
# CloudDesk session: xfwm4 without its compositor.
exec @REAL@ --compositor=off "$@"`;
const XFDESKTOP_PLAIN = `#!/bin/sh
# CloudDesk session: a plain background instead of xfdesktop (DESKTOP_WALLPAPER=keep keeps xfdesktop).
xsetroot -solid '${PLAIN_BACKGROUND}' 2>/dev/null
exec sleep 2147483647`;

// Started with setsid as its own session and process group, detached from the SSH channel (stdio goes to the
// log; with no controlling terminal nothing sends it SIGHUP, so nohup is not needed). It marks itself with
// CLOUDDESK_DESKTOP=<display>-<pid> — inherited by everything the desktop spawns, including daemons that
// re-parent to init (dbus-daemon, ssh-agent, gpg-agent) — then becomes Xvnc, so Xvnc's PID is the session,
// process group and marker id. Its files are named <display>-<pid>.*, so no other start (another gateway,
// another cluster on the same account) can overwrite them: it renames the ones the start prepared under its
// token, then writes its PID where that start waits for it. The desktop environment waits, in a child, until
// the X lock names this Xvnc and its socket exists: never on someone else's X server.
const SESSION_SCRIPT = String.raw`
n=$1; rdir=$2; transport=$3; geometry=$4; xvnc=$5; tok=$6; fps=$7; companion=$8; compargs=$9; shift 9
id="$n-$$"; base="$rdir/start-$tok"
CLOUDDESK_DESKTOP="$id"; export CLOUDDESK_DESKTOP
mv -f "$base.log" "$rdir/$id.log"
mv -f "$base.xauth" "$rdir/$id.xauth" || exit 1
if [ "$transport" = tcp ]; then mv -f "$base.passwd" "$rdir/$id.passwd" || exit 1; fi
echo "$$" > "$base.pid"
DISPLAY=":$n"; XAUTHORITY="$rdir/$id.xauth"; export DISPLAY XAUTHORITY
unset SSH_CLIENT SSH_CONNECTION SSH_ORIGINAL_COMMAND
cd "$HOME" 2>/dev/null || cd /
xpid=$$
(
  i=0
  while :; do
    l=; { read -r l < "/tmp/.X$n-lock"; } 2>/dev/null
    if [ "$l" = "$xpid" ] && [ -S "/tmp/.X11-unix/X$n" ]; then break; fi
    i=$((i + 1))
    if [ "$i" -gt 600 ] || ! kill -0 "$xpid" 2>/dev/null; then exit 1; fi
    sleep 0.1
  done
  if [ "$companion" != - ]; then
    if [ "$compargs" = - ]; then compargs=; fi
    "$companion" $compargs </dev/null &
  fi
  exec "$@"
) &
if [ "$transport" = unix ]; then
  exec "$xvnc" ":$n" -auth "$rdir/$id.xauth" -rfbunixpath "$rdir/$id.sock" -rfbunixmode 0600 -rfbport -1 \
    -SecurityTypes None -localhost -nolisten tcp -AlwaysShared \
    -geometry "$geometry" -depth 24 -FrameRate "$fps" -desktop "CloudDesk :$n"
else
  exec "$xvnc" ":$n" -auth "$rdir/$id.xauth" -rfbport "$((5900 + n))" -localhost \
    -SecurityTypes VncAuth -PasswordFile "$rdir/$id.passwd" -nolisten tcp -AlwaysShared \
    -geometry "$geometry" -depth 24 -FrameRate "$fps" -desktop "CloudDesk :$n"
fi
`;

const SCRIPT = String.raw`
set -u
umask 077
PATH="$PATH:/usr/local/bin:/usr/bin:/bin"
export PATH

say() { printf '%s\n' "$*"; }
fail() { code=$1; shift; say "error=$*"; exit "$code"; }
is_int() { case $1 in ''|*[!0-9]*|??????????*) return 1 ;; esac; }

# lookup NAME DIRS: the first executable NAME in the colon-separated DIRS.
lookup() {
  set -f; _old=$IFS; IFS=:
  for _d in $2; do
    if [ -n "$_d" ] && [ -f "$_d/$1" ] && [ -x "$_d/$1" ]; then
      IFS=$_old; set +f; say "$_d/$1"; return 0
    fi
  done
  IFS=$_old; set +f; return 1
}

vnc_dirs() {
  if [ "$1" = - ]; then say "$PATH:/opt/TigerVNC/bin"; else say "$1"; fi
}

find_xvnc() {
  XVNC=; XVNC_KIND=; XVNC_VERSION=; XVNC_UNIX=0; VNCPASSWD=
  _dirs=$(vnc_dirs "$1")
  VNCPASSWD=$(lookup vncpasswd "$_dirs") || VNCPASSWD=
  XVNC=$(lookup Xvnc "$_dirs") || { XVNC=; return 1; }
  _v=$("$XVNC" -version 2>&1 </dev/null | head -n 5)
  case $_v in *TigerVNC*) XVNC_KIND=tigervnc ;; *) XVNC_KIND=other ;; esac
  XVNC_VERSION=$(say "$_v" | sed -n 's/.*TigerVNC \([0-9][0-9.]*\).*/\1/p' | head -n 1)
  if "$XVNC" -help 2>&1 </dev/null | grep -q rfbunixpath; then XVNC_UNIX=1; fi
  return 0
}

# The session command of desktop environment $1 (DE_CMD), and the companion program to start beside it
# (DE_COMPANION, - for none or none installed).
de_command() {
  DE_CMD=; DE_COMPANION=-; _compargs=-
  case $1 in
@@DE_CASES@@
    *) return 1 ;;
  esac
  for _c in $_comps; do
    if DE_COMPANION=$(lookup "$_c" "$PATH"); then break; fi
    DE_COMPANION=-
  done
  for _c in $_cands; do
    if DE_CMD=$(lookup "$_c" "$PATH"); then return 0; fi
  done
  DE_CMD=; return 1
}

# install PATH: stdin to an executable PATH, by a rename (starts running side by side share these files).
install_script() {
  cat > "$1.$$" && chmod 700 "$1.$$" && mv -f "$1.$$" "$1"
}

# The folder of session-only programs for xfce ($1 = plain or keep, the wallpaper), put first in the
# session's PATH; prints it.
xfce_bin() {
  _x="$RDIR/xfce-$1-bin"
  mkdir -p "$_x" || return 1
  if _real=$(lookup xfwm4 "$PATH"); then
    case $_real in *[!A-Za-z0-9._/-]*) return 1 ;; esac
    sed "s|@REAL@|$_real|" <<'SH' | install_script "$_x/xfwm4" || return 1
@@XFWM4_WRAPPER@@
SH
  fi
  if [ "$1" = plain ]; then
    install_script "$_x/xfdesktop" <<'SH' || return 1
@@XFDESKTOP_PLAIN@@
SH
  fi
  say "$_x"
}

# The checks below run once per display or process looked at, so they use shell builtins only: a fork each
# would make a start on an instance with N desktops cost O(N) processes.
proc_alive() {
  [ -d "/proc/$1" ] || return 1
  { while IFS= read -r _l; do
      case $_l in State:*Z*) return 1 ;; State:*) return 0 ;; esac
    done < "/proc/$1/status"; } 2>/dev/null
  [ -d "/proc/$1" ]
}

has_env() {
  tr '\000' '\n' < "/proc/$1/environ" 2>/dev/null | grep -qx "$2"
}

# The PID in an X lock file ("%10d\n"), or nothing.
lock_pid() {
  _lp=
  { IFS=' ' read -r _lp < "$1"; } 2>/dev/null
  case $_lp in ''|*[!0-9]*|???????????*) _lp= ;; esac
}

# A display is free when no live X server holds its lock and nobody else's socket sits in its place.
is_free() {
  if [ -e "/tmp/.X$1-lock" ]; then
    # Someone else's lock is theirs, live or not (and is not read: only our own files are).
    [ -O "/tmp/.X$1-lock" ] || return 1
    lock_pid "/tmp/.X$1-lock"
    if [ -n "$_lp" ] && proc_alive "$_lp"; then return 1; fi
  fi
  if [ -e "/tmp/.X11-unix/X$1" ] && [ ! -O "/tmp/.X11-unix/X$1" ]; then return 1; fi
  return 0
}

runtime_dir() {
  RDIR="/tmp/clouddesk-$(id -u)"
  mkdir -m 700 "$RDIR" 2>/dev/null
  if [ -L "$RDIR" ] || [ ! -d "$RDIR" ] || [ ! -O "$RDIR" ]; then return 1; fi
  chmod 700 "$RDIR"
}

# An X authority file with a random MIT-MAGIC-COOKIE-1 for display N (family Wild): without -auth, any
# local user could connect to the X server (also through its abstract socket) and read keystrokes.
write_xauth() {
  _len=$(printf %s "$1" | wc -c | tr -d ' ')
  # family 0xffff (Wild), address length 0, display number length (2 bytes) and digits, name, 16-byte cookie
  { printf '\377\377\000\000\000'; printf "\\00$_len"; printf %s "$1"
    printf '\000\022MIT-MAGIC-COOKIE-1\000\020'; head -c 16 /dev/urandom; } > "$2"
}

log_tail() {
  [ -f "$1" ] && tail -n 40 "$1" 2>/dev/null | cut -c1-300 | sed 's/^/log=/'
  return 0
}

# probe MIN MAX VNC_PATH FROM LIMIT: what the instance has, and up to LIMIT free displays, looking from FROM
# up to MAX and then on from MIN: a start costs the displays it looks at, not every desktop on the instance.
cmd_probe() {
  min=$1; max=$2; from=$4; limit=$5
  is_int "$min" && is_int "$max" && is_int "$from" && is_int "$limit" || fail 14 bad-arguments
  if find_xvnc "$3"; then
    say "xvnc=$XVNC_KIND"; say "version=$XVNC_VERSION"; say "unix=$XVNC_UNIX"
    [ -n "$VNCPASSWD" ] && say vncpasswd=1
  fi
  for _id in @@DE_IDS@@; do
    if de_command "$_id"; then say "de=$_id"; fi
  done
  lookup setsid "$PATH" >/dev/null && say setsid=1
  [ "$from" -ge "$min" ] && [ "$from" -le "$max" ] || from=$min
  _n=$from; _found=0; _seen=0; _span=$((max - min + 1))
  while [ "$_seen" -lt "$_span" ] && [ "$_found" -lt "$limit" ]; do
    if is_free "$_n"; then say "free=$_n"; _found=$((_found + 1)); fi
    _seen=$((_seen + 1)); _n=$((_n + 1))
    [ "$_n" -le "$max" ] || _n=$min
  done
}

# True when process $1 listens on the RFB socket of this start: the Unix socket $2 (its inode in
# /proc/net/unix among the process's open files) or, with $2 = -, TCP port $3 on any address.
listens() {
  if [ "$2" = - ]; then
    _hex=$(printf '%04X' "$3")
    _inos=$(awk -v p=":$_hex" '$4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' \
      /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  else
    _inos=$(awk -v p="$2" '$NF == p && $4 == "00010000" { print $7 }' /proc/net/unix 2>/dev/null)
  fi
  [ -n "$_inos" ] || return 1
  _fds=$(ls -l "/proc/$1/fd" 2>/dev/null) || return 1
  for _ino in $_inos; do
    case $_fds in *"socket:[$_ino]"*) return 0 ;; esac
  done
  return 1
}

# A start that will not finish stops what it started, in the background, so its answer is not delayed.
abandon() {
  if [ -n "$pid" ]; then
    ( cmd_stop "$n" "$pid" ) </dev/null >/dev/null 2>&1 &
  elif [ -n "$spid" ]; then
    kill -s TERM -- "-$spid" "$spid" 2>/dev/null
  fi
  rm -f "$base.pid" "$base.xauth" "$base.passwd" "$base.abort"
}

# start N DE GEOMETRY TRANSPORT VNC_PATH WAIT_DECISECONDS TOKEN FPS WALLPAPER: ready means *our* server — the X lock
# names the Xvnc this start launched and that process listens on the RFB socket — otherwise the display
# is someone else's (exit 12) and the gateway tries another one. TOKEN (from the gateway) names the start's
# files until Xvnc's PID is known, and lets abort find a start the gateway gave up on: start-TOKEN.pid
# stays after a success for that (and is swept after ten minutes).
cmd_start() {
  n=$1; de=$2; geometry=$3; transport=$4; wait_ds=$6; tok=$7; fps=$8; wallpaper=$9
  is_int "$n" && is_int "$wait_ds" && is_int "$fps" || fail 14 bad-arguments
  case $wallpaper in plain|keep) ;; *) fail 14 bad-arguments ;; esac
  case $geometry in ''|*[!0-9x]*) fail 14 bad-arguments ;; esac
  case $transport in unix|tcp) ;; *) fail 14 bad-arguments ;; esac
  case $tok in ''|*[!a-z0-9]*|?????????????????????????????????*) fail 14 bad-arguments ;; esac
  find_xvnc "$5" && [ "$XVNC_KIND" = tigervnc ] || fail 10 vnc-missing
  de_command "$de" || fail 11 desktop-environment-missing
  SETSID=$(lookup setsid "$PATH") || fail 14 setsid-missing
  runtime_dir || fail 14 runtime-dir
  is_free "$n" || fail 12 display-busy
  base="$RDIR/start-$tok"; log="$base.log"; pid=; spid=
  find "$RDIR" -maxdepth 1 -name 'start-*' -mmin +10 -exec rm -f {} + 2>/dev/null
  rm -f "$base.log" "$base.pid" "$base.xauth" "$base.passwd" "$base.abort"
  write_xauth "$n" "$base.xauth" || fail 14 xauth
  if [ "$transport" = tcp ]; then
    [ -n "$VNCPASSWD" ] || fail 14 vncpasswd-missing
    printf '%s\n' "$VNC_PASSWORD" | "$VNCPASSWD" -f > "$base.passwd" || fail 14 vncpasswd
  fi
  if [ "$de" = xfce ]; then
    _bin=$(xfce_bin "$wallpaper") || fail 14 xfce-setup
    PATH="$_bin:$PATH"; export PATH
  fi
  if _run=$(lookup dbus-run-session "$PATH"); then set -- "$_run" -- "$DE_CMD"
  elif _run=$(lookup dbus-launch "$PATH"); then set -- "$_run" --exit-with-session "$DE_CMD"
  else set -- "$DE_CMD"; fi
  "$SETSID" sh -c "$SESSION_SCRIPT" clouddesk-desktop "$n" "$RDIR" "$transport" "$geometry" "$XVNC" "$tok" "$fps" \
    "$DE_COMPANION" "$_compargs" "$@" \
    </dev/null >>"$log" 2>&1 &
  spid=$!
  i=0
  while :; do
    if [ -z "$pid" ] && [ -s "$base.pid" ]; then
      pid=$(tr -cd 0-9 < "$base.pid"); log="$RDIR/$n-$pid.log"
      [ -n "$pid" ] || { abandon; fail 14 no-pid; }
    fi
    if [ -e "$base.abort" ]; then say error=aborted; abandon; exit 15; fi
    if { [ -n "$pid" ] && ! proc_alive "$pid"; } || { [ -z "$pid" ] && ! proc_alive "$spid"; }; then
      if grep -q -e 'already active' -e 'Address already in use' -e 'Cannot establish any listening' "$log"; then
        say error=display-busy; log_tail "$log"; abandon; exit 12
      fi
      say error=xvnc-died; log_tail "$log"; abandon; exit 13
    fi
    if [ -n "$pid" ] && [ -e "/tmp/.X$n-lock" ]; then
      # Someone else's lock, or one naming another live process: their display, not ours.
      lock_pid "/tmp/.X$n-lock"
      if [ ! -O "/tmp/.X$n-lock" ] || { [ -n "$_lp" ] && [ "$_lp" != "$pid" ] && proc_alive "$_lp"; }; then
        say error=display-busy; abandon; exit 12
      fi
      if [ "$_lp" = "$pid" ] && [ -S "/tmp/.X11-unix/X$n" ]; then
        if [ "$transport" = tcp ]; then _rfb=-; else _rfb="$RDIR/$n-$pid.sock"; fi
        # Checked after the sockets, so an abort either finds the PID file or stops this start here.
        if listens "$pid" "$_rfb" "$((5900 + n))" && [ ! -e "$base.abort" ]; then break; fi
      fi
    fi
    i=$((i + 1))
    if [ "$i" -ge "$wait_ds" ]; then
      say error=timeout; log_tail "$log"; abandon; exit 15
    fi
    sleep 0.1
  done
  say ok=1; say "pid=$pid"; say "display=$n"
  if [ "$transport" = unix ]; then say "socket=$RDIR/$n-$pid.sock"; else say "port=$((5900 + n))"; fi
}

# abort N TOKEN: stops what the start with that token started, when the gateway gave up waiting for it.
cmd_abort() {
  n=$1; tok=$2
  is_int "$n" || fail 14 bad-arguments
  case $tok in ''|*[!a-z0-9]*|?????????????????????????????????*) fail 14 bad-arguments ;; esac
  runtime_dir || fail 14 runtime-dir
  base="$RDIR/start-$tok"
  # First the flag the start looks at, then its PID file: one of the two always catches it.
  : > "$base.abort"
  _pid=$(tr -cd 0-9 < "$base.pid" 2>/dev/null)
  if [ -n "$_pid" ]; then cmd_stop "$n" "$_pid"; else say stopped=1; fi
}

cmd_alive() {
  is_int "$1" && is_int "$2" || fail 14 bad-arguments
  if proc_alive "$2" && has_env "$2" "CLOUDDESK_DESKTOP=$1-$2"; then say alive=1; else say alive=0; fi
}

# grep -z (GNU, BusyBox) reads every process's environment in one pass; without it, one process at a time.
GREP_Z=
grep_z() {
  if [ -z "$GREP_Z" ]; then
    if printf 'a\000' | grep -qxz a 2>/dev/null; then GREP_Z=1; else GREP_Z=0; fi
  fi
  [ "$GREP_Z" = 1 ]
}

# The environment entries matching the regexp $1 of every process readable to us (one line each).
env_entries() {
  if grep_z; then
    grep -hz -- "$1" /proc/[0-9]*/environ 2>/dev/null | tr '\000' '\n'
  else
    for _p in /proc/[0-9]*; do tr '\000' '\n' < "$_p/environ" 2>/dev/null | grep -- "$1"; done
  fi
}

# PIDs of our processes (not this script) whose environment holds exactly $1.
marked() (
  cd /proc || exit 0
  if grep_z; then
    grep -lxzF -- "$1" [0-9]*/environ 2>/dev/null
  else
    for _p in [0-9]*; do has_env "$_p" "$1" && say "$_p/environ"; done
  fi | while IFS=/ read -r _p _; do
    [ "$_p" != "$$" ] && [ -O "$_p" ] && say "$_p"
  done
)

# When process $1 started, in clock ticks since boot: field 22 of /proc/PID/stat, counted after the command
# name's closing parenthesis (the name may hold spaces). Only run for a few processes: it forks.
start_tick() {
  _st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20)
  is_int "$_st"
}

# True when process $1 belongs to us: the real uid in /proc/PID/status, which stays readable (a non-dumpable
# process's other /proc files, and on some kernels its folder, belong to root).
ours() {
  { while IFS= read -r _l; do
      case $_l in Uid:*) set -f; set -- $_l; set +f; [ "$2" = "$MY_UID" ]; return ;; esac
    done < "/proc/$1/status"; } 2>/dev/null
  return 1
}

# Agents the desktop advertised to its programs (ssh-agent makes itself unreadable, but says where it is).
advertised() {
  for _p in $1; do
    tr '\000' '\n' < "/proc/$_p/environ" 2>/dev/null | sed -n 's/^SSH_AGENT_PID=\([0-9][0-9]*\)$/\1/p'
  done
}

# True when a desktop other than $1 still runs for this user.
other_desktops() {
  env_entries '^CLOUDDESK_DESKTOP=' | grep -qvx -- "$1"
}

# Key agents (ssh-agent, gpg-agent, …) mark themselves non-dumpable, which makes their environment — and
# our marker in it — unreadable. Taken as ours: ours by uid, unreadable, an agent, started at or after the
# desktop's start tick $1 (xfce4-session starts them, gpg starts gpg-agent on demand, a socket can start it
# later). Compared as start ticks, not ages: a stop that takes seconds must not turn an agent that started
# with the desktop into an older one. (Not only children of init: one still daemonizing has a parent for a
# moment.) Only looked for when no other desktop of this user runs, as such agents are per-user singletons
# that desktop may be using.
hidden_agents() {
  for _p in $(cd /proc && echo [0-9]*); do
    _d=/proc/$_p
    [ "$_p" != "$$" ] || continue
    _c=
    { IFS= read -r _c < "$_d/comm"; } 2>/dev/null || continue
    case $_c in
      ssh-agent|gpg-agent|scdaemon|dirmngr|keyboxd|gnome-keyring-d) ;;
      *) continue ;;
    esac
    ours "$_p" && [ ! -r "$_d/environ" ] || continue
    start_tick "$_p" || continue
    [ "$_st" -ge "$1" ] && say "$_p"
  done
}

kill_agents() {
  _hidden=
  for _p in $1; do
    if ours "$_p" && proc_alive "$_p"; then _hidden="$_hidden $_p"; fi
  done
  [ -n "$_hidden" ] || return 0
  kill -s TERM $_hidden 2>/dev/null
  i=0; _still=$_hidden
  while [ -n "$_still" ] && [ "$i" -lt 20 ]; do
    sleep 0.1; i=$((i + 1))
    _still=
    for _p in $_hidden; do proc_alive "$_p" && _still="$_still $_p"; done
  done
  [ -n "$_still" ] && kill -s KILL $_still 2>/dev/null
  return 0
}

# Ends the desktop and everything it spawned: the process group first, then every process of ours that
# carries the marker (daemons that left the group), TERM then KILL.
cmd_stop() {
  n=$1; pid=$2
  is_int "$n" && is_int "$pid" || fail 14 bad-arguments
  marker="CLOUDDESK_DESKTOP=$n-$pid"
  grep_z || :
  MY_UID=$(id -u)
  # When this desktop started, in ticks since boot: Xvnc's own start, or (Xvnc already gone) the time of
  # its X authority file (made just before Xvnc) on the wall clock less the boot time, a second early for the
  # file time's whole seconds. Desktops of older gateways had <N>.pid instead.
  dstart=; _since=
  if [ "$pid" -gt 1 ] && proc_alive "$pid" && has_env "$pid" "$marker" && start_tick "$pid"; then
    dstart=$_st
  elif runtime_dir; then
    if [ -f "$RDIR/$n-$pid.xauth" ]; then _since="$RDIR/$n-$pid.xauth"
    elif [ "$(tr -cd 0-9 < "$RDIR/$n.pid" 2>/dev/null)" = "$pid" ]; then _since="$RDIR/$n.pid"; fi
  fi
  if [ -n "$_since" ]; then
    _hz=$(getconf CLK_TCK 2>/dev/null) || _hz=100
    _bt=$(sed -n 's/^btime \([0-9][0-9]*\)$/\1/p' /proc/stat)
    _mt=$(stat -c %Y "$_since" 2>/dev/null)
    if is_int "$_hz" && is_int "$_bt" && is_int "$_mt"; then dstart=$(((_mt - _bt - 1) * _hz)); fi
  fi
  agents=$(advertised "$(marked "$marker")")
  if [ "$pid" -gt 1 ] && proc_alive "$pid" && has_env "$pid" "$marker"; then
    kill -s TERM -- "-$pid" 2>/dev/null
    kill -s TERM "$pid" 2>/dev/null
  fi
  # A dying session can still spawn (dbus activation, autostart): signal whatever carries the marker on
  # every pass, and finish only after a few quiet passes in a row. TERM for ~3 s, then KILL.
  i=0; quiet=0; _left=
  while [ "$i" -lt 60 ]; do
    _left=$(marked "$marker")
    if [ -z "$_left" ]; then
      quiet=$((quiet + 1))
      [ "$quiet" -ge 3 ] && break
    else
      quiet=0
      if [ "$i" -lt 30 ]; then kill -s TERM $_left 2>/dev/null; else kill -s KILL $_left 2>/dev/null; fi
    fi
    sleep 0.1; i=$((i + 1))
  done
  # Two passes: an agent the session launched just before it died may only now finish daemonizing.
  for _pass in 1 2; do
    if [ -n "$dstart" ] && ! other_desktops "$marker"; then agents="$agents $(hidden_agents "$dstart")"; fi
    kill_agents "$agents"
    agents=
    [ "$_pass" = 1 ] && sleep 0.5
  done
  # Its own files; and those of an older gateway's desktop (one <N>.pid per display), only if no other
  # live desktop has taken N since.
  if runtime_dir; then
    rm -f "$RDIR/$n-$pid.sock" "$RDIR/$n-$pid.xauth" "$RDIR/$n-$pid.passwd" "$RDIR/$n-$pid.log"
    grep -lx -- "$pid" "$RDIR"/start-*.pid 2>/dev/null | while IFS= read -r _f; do rm -f "$_f"; done
    _owner=$(tr -cd 0-9 < "$RDIR/$n.pid" 2>/dev/null)
    if [ -z "$_owner" ] || [ "$_owner" = "$pid" ] || ! proc_alive "$_owner"; then
      rm -f "$RDIR/$n.sock" "$RDIR/$n.pid" "$RDIR/$n.xauth" "$RDIR/$n.passwd"
    fi
  fi
  if [ -O "/tmp/.X$n-lock" ]; then
    _p=$(tr -cd 0-9 < "/tmp/.X$n-lock" 2>/dev/null | head -c 10)
    if [ -z "$_p" ] || ! proc_alive "$_p"; then
      rm -f "/tmp/.X$n-lock"
      [ -O "/tmp/.X11-unix/X$n" ] && rm -f "/tmp/.X11-unix/X$n"
    fi
  fi
  if [ -n "$_left" ]; then say error=survivors; exit 14; fi
  say stopped=1
}

SESSION_SCRIPT='@@SESSION_SCRIPT@@'
cmd=$1; shift
case $cmd in
  probe) cmd_probe "$@" ;;
  start) cmd_start "$@" ;;
  alive) cmd_alive "$@" ;;
  stop) cmd_stop "$@" ;;
  abort) cmd_abort "$@" ;;
  *) fail 14 unknown-command ;;
esac
`;

if (SESSION_SCRIPT.includes("'")) throw new Error('the session script must not contain single quotes');

// Replacer functions, not strings: a replacement string would turn the shell's `$$` into `$`.
export const REMOTE_SCRIPT = SCRIPT.replace('@@DE_CASES@@', () => deCases)
  .replace('@@DE_IDS@@', () => deIds)
  .replace('@@XFWM4_WRAPPER@@', () => XFWM4_WRAPPER)
  .replace('@@XFDESKTOP_PLAIN@@', () => XFDESKTOP_PLAIN)
  .replace('@@SESSION_SCRIPT@@', () => SESSION_SCRIPT);

export type RemoteCommand = 'probe' | 'start' | 'alive' | 'stop' | 'abort';

const safeToken = /^[A-Za-z0-9._:/-]+$/;

/**
 * The command line for one subcommand. Every argument must be a plain token (digits, an allow-listed id,
 * a geometry, a validated path list) — anything else is a programming error, never quoted user text.
 */
export function remoteCommand(command: RemoteCommand, args: readonly (string | number)[]): string {
  const words = [command, ...args.map(String)];
  for (const w of words)
    if (!safeToken.test(w)) throw new Error(`unsafe remote argument: ${JSON.stringify(w)}`);
  return `sh -s -- ${words.join(' ')}`;
}

/** What goes on stdin: the password line (tcp only; [A-Za-z0-9] so it needs no quoting), then the script. */
export function remoteStdin(vncPassword: string | null): string {
  if (vncPassword !== null && !/^[A-Za-z0-9]{8}$/.test(vncPassword))
    throw new Error('bad generated VNC password');
  return `VNC_PASSWORD='${vncPassword ?? ''}'\n${REMOTE_SCRIPT}`;
}

/** Parses the script's `key=value` lines; repeated keys collect into arrays. */
export function parseRemoteOutput(stdout: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const key = line.slice(0, eq);
    const list = out.get(key) ?? [];
    list.push(line.slice(eq + 1));
    out.set(key, list);
  }
  return out;
}
