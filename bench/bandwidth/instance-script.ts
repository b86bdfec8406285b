// The one shell script the bandwidth benchmark runs on the instance, as the instance user, over SSH:
// `sh -s -- <command> <display> [args]` with this script on stdin (like the gateway's own remote script,
// no text of ours is ever put into a command line). It drives the desktop the gateway started with
// xdotool, makes the test material locally (ImageMagick's plasma for photos and the animation, the
// system's licence texts for the document: nothing is downloaded), and reads the lossless framebuffer
// (`import -window root`).
//
// Commands: tools, reset, wait-desktop N, prepare N SEED, compositing N on|off, geometry N,
// framebuffer N, and setup|run|teardown N KIND [SECONDS] for the workload kinds of phases.ts.
// Files live in /tmp/clouddesk-bw-<uid>/; every app a phase starts is closed by the PID it wrote there.

export const INSTANCE_SCRIPT = String.raw`
set -u
cmd=$1; n=$2; shift 2
case $n in ''|*[!0-9]*) echo "error=bad-display" >&2; exit 2 ;; esac
W="/tmp/clouddesk-bw-$(id -u)"
mkdir -p "$W" && chmod 700 "$W"
IM=convert; [ -x /usr/bin/convert ] && IM=/usr/bin/convert
say() { printf '%s\n' "$*"; }
die() { say "error=$*" >&2; exit 3; }

# desktop_var NAME: that variable of a process of the desktop on display N (it carries the marker).
desktop_var() {
  for _e in /proc/[0-9]*/environ; do
    { tr '\000' '\n' < "$_e"; } 2>/dev/null | grep -q "^CLOUDDESK_DESKTOP=$n-" || continue
    _a=$({ tr '\000' '\n' < "$_e"; } 2>/dev/null | sed -n "s/^$1=//p" | head -n 1)
    if [ -n "$_a" ]; then say "$_a"; return 0; fi
  done
  return 1
}

# The desktop's D-Bus session bus (xfconf lives there).
session_bus() {
  _a=$(desktop_var DBUS_SESSION_BUS_ADDRESS) || return 1
  export DBUS_SESSION_BUS_ADDRESS="$_a"
}

# The desktop's X authority: <N>-<Xvnc PID>.xauth in the gateway's folder (<N>.xauth before).
XAUTHORITY=$(desktop_var XAUTHORITY) || XAUTHORITY="/tmp/clouddesk-$(id -u)/$n.xauth"
export DISPLAY=":$n" XAUTHORITY

win() { timeout 20 xdotool search --sync --onlyvisible --name "$1" 2>/dev/null | head -n 1; }
start_app() {
  _name=$1; shift
  setsid "$@" </dev/null >>"$W/$_name.log" 2>&1 &
  echo $! > "$W/$_name.pid"
}
close_app() {
  if [ -s "$W/$1.pid" ]; then kill "$(cat "$W/$1.pid")" 2>/dev/null; fi
  rm -f "$W/$1.pid"
}
focus() {
  _w=$(win "$1"); [ -n "$_w" ] || die "no window $1"
  xdotool windowactivate --sync "$_w" 2>/dev/null || xdotool windowfocus --sync "$_w"
  say "window=$_w"
}
screen_size() { xdotool getdisplaygeometry | tr ' ' x; }

cmd_tools() {
  for t in xdotool xterm mousepad feh import xfconf-query setsid timeout; do
    if command -v "$t" >/dev/null 2>&1; then say "tool=$t"; fi
  done
  [ -x "$(command -v "$IM")" ] && say "tool=convert"
  return 0
}

# A stock desktop for every setting: nothing a previous one saved (xfconf, xfce's saved session).
cmd_reset() {
  rm -rf "$HOME/.config/xfce4" "$HOME/.cache/sessions" "$HOME/.config/mousepad" "$HOME/.config/feh"
  rm -f "$W"/*.pid "$W"/*.log "$W"/go
}

cmd_wait_desktop() {
  # With the gateway's plain background (DESKTOP_WALLPAPER=plain) the session runs no xfdesktop: its
  # PATH starts with the gateway's folder of session-only programs for that mode.
  want_xfdesktop=1
  case $(desktop_var PATH) in *xfce-plain-bin*) want_xfdesktop=0 ;; esac
  i=0
  while [ "$i" -lt 600 ]; do
    if xdotool search --onlyvisible --class xfce4-panel >/dev/null 2>&1 \
      && { [ "$want_xfdesktop" = 0 ] || xdotool search --onlyvisible --class xfdesktop >/dev/null 2>&1; }; then
      say ready=1; return 0
    fi
    sleep 0.1; i=$((i + 1))
  done
  die desktop-not-ready
}

cmd_prepare() {
  seed=$1
  case $seed in ''|*[!0-9]*) die bad-seed ;; esac
  if [ ! -s "$W/document.txt" ]; then
    : > "$W/document.txt"
    for _i in 1 2 3; do
      for f in /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0 \
        /usr/share/common-licenses/GPL-2 /usr/share/common-licenses/LGPL-2.1; do
        [ -r "$f" ] && cat "$f" >> "$W/document.txt"
      done
    done
    [ "$(wc -l < "$W/document.txt")" -ge 2000 ] || seq 1 5000 | sed 's/^/line /' >> "$W/document.txt"
  fi
  mkdir -p "$W/photos-$seed"
  for _i in 1 2 3 4 5 6 7 8; do
    p="$W/photos-$seed/photo-$_i.jpg"
    [ -s "$p" ] || "$IM" -size 1024x683 -seed "$((seed * 100 + _i))" plasma:fractal -blur 0x1 -quality 90 "$p" \
      || die photo
  done
  say prepared=1
}

# The animation's frames for the current screen size: a plasma picture panned across, 24 frames.
anim_frames() {
  size=$(screen_size); w=$(say "$size" | cut -dx -f1); h=$(say "$size" | cut -dx -f2)
  d="$W/anim-$1-$size"
  if [ ! -s "$d/frame-23.jpg" ]; then
    mkdir -p "$d"
    "$IM" -size "$((w + 120))x$((h + 96))" -seed "$1" plasma:fractal -blur 0x2 "$d/big.ppm" || die animation
    _i=0
    while [ "$_i" -lt 24 ]; do
      "$IM" "$d/big.ppm" -crop "$w"x"$h"+"$((_i * 5))"+"$((_i * 4))" +repage -quality 92 \
        "$d/frame-$(printf %02d "$_i").jpg" || die animation
      _i=$((_i + 1))
    done
    rm -f "$d/big.ppm"
  fi
  ANIM="$d"
}

# The xfwm4 processes of this desktop (by its marker) whose command line has --compositor=off.
xfwm4_off() {
  for _d in /proc/[0-9]*; do
    [ "$(cat "$_d/comm" 2>/dev/null)" = xfwm4 ] || continue
    { tr '\000' '\n' < "$_d/environ"; } 2>/dev/null | grep -qx "CLOUDDESK_DESKTOP=$1" || continue
    { tr '\000' ' ' < "$_d/cmdline"; } 2>/dev/null | grep -q -- '--compositor=off' && say "$_d"
  done
  return 0
}

# The gateway starts xfwm4 with --compositor=off, which no xfconf setting can turn back on: for "on",
# this desktop's xfwm4 is replaced by one started without it (with the desktop's marker, so ending the
# desktop ends it).
cmd_compositing() {
  session_bus || die no-session-bus
  v=false; [ "$1" = on ] && v=true
  if [ "$v" = true ]; then
    _m=$(desktop_var CLOUDDESK_DESKTOP) || die no-desktop
    _old=$(xfwm4_off "$_m")
    if [ -n "$_old" ]; then
      _x=$(command -v xfwm4) || die no-xfwm4
      CLOUDDESK_DESKTOP="$_m" setsid "$_x" --replace </dev/null >>"$W/xfwm4.log" 2>&1 &
      i=0
      while [ -n "$(xfwm4_off "$_m")" ]; do
        i=$((i + 1)); [ "$i" -lt 300 ] || die xfwm4-replace
        sleep 0.1
      done
    fi
  fi
  xfconf-query -c xfwm4 -p /general/use_compositing -s "$v" 2>/dev/null \
    || xfconf-query -c xfwm4 -p /general/use_compositing -n -t bool -s "$v" || die xfconf
  say "compositing=$(xfconf-query -c xfwm4 -p /general/use_compositing)"
}

cmd_geometry() { say "geometry=$(screen_size)"; }

# The lossless framebuffer as PPM on stdout; where the pointer is on stderr (Xvnc draws the cursor into
# the stream of a viewer whose own pointer is elsewhere, and the X framebuffer has no cursor).
cmd_framebuffer() {
  X=0; Y=0
  eval "$(xdotool getmouselocation --shell 2>/dev/null)"
  say "pointer=$X,$Y" >&2
  exec import -window root -depth 8 ppm:-
}

# ---- the workload kinds: setup (not measured), run (measured, SECONDS long), teardown ----

setup_typing() {
  start_app typing xterm -T bw-typing -geometry 100x30+80+80 -fa Monospace -fs 11 \
    -e sh -c 'stty -echoctl 2>/dev/null; exec cat > /dev/null'
  focus bw-typing
}
# Paced per second, so each phase lasts what it says whatever the machine's load: $2 is done each second.
per_second() {
  _secs=$1; _i=0; _t0=$(date +%s%N)
  while [ "$_i" -lt "$_secs" ]; do
    "$2" "$_i"
    _i=$((_i + 1))
    _wait=$((_t0 + _i * 1000000000 - $(date +%s%N)))
    if [ "$_wait" -gt 0 ] && [ "$_wait" -lt 1000000000 ]; then sleep "$(printf '0.%09d' "$_wait")"; fi
  done
}
# ~5 characters a second of prose from the document, a new line every 60 characters.
type_second() {
  xdotool type --delay 120 "$(printf '%s' "$TEXT" | cut -c$(($1 * 5 + 1))-$(($1 * 5 + 5)))"
  if [ $((($1 + 1) % 12)) -eq 0 ]; then xdotool key Return; fi
}
run_typing() {
  TEXT=$(tr -s ' \n' '  ' < "$W/document.txt" | tr -cd 'A-Za-z0-9 .,;:()' | head -c $(($1 * 5 + 5)))
  per_second "$1" type_second
}

setup_scroll() {
  rm -f "$W/go"; mkfifo "$W/go"
  start_app scroll xterm -T bw-scroll -maximized -fa Monospace -fs 10 \
    -e sh -c 'read d < "$0"; timeout "$d" sh -c "while :; do find /usr; done"; exec sleep 1000000' "$W/go"
  focus bw-scroll
}
run_scroll() { say "$1" > "$W/go"; sleep "$1"; }

setup_paging() {
  cp "$W/document.txt" "$W/paging-document.txt"
  start_app paging mousepad "$W/paging-document.txt"
  _w=$(win paging-document); [ -n "$_w" ] || die "no mousepad window"
  xdotool windowactivate --sync "$_w"
  xdotool windowmove "$_w" 0 0 windowsize "$_w" 100% 100%
  # From the top, to the last line on screen: from there every Down scrolls the view by one line.
  xdotool key ctrl+Home
  xdotool key --delay 5 --repeat 60 Down
}
page_second() { xdotool key --delay 30 Down Down Down Down Down Down Down Down Down Down; }
run_paging() { per_second "$1" page_second; }

setup_drag() {
  start_app drag xterm -T bw-drag -geometry 80x24+200+150 -fa Monospace -fs 11 \
    -e sh -c 'ls -l /usr/bin | head -n 200; exec sleep 1000000'
  focus bw-drag
}
# Alt+drag (xfwm4's easy-click move) around a circle of 150 px, a pointer move every 20 ms or so.
run_drag() {
  _w=$(win bw-drag); [ -n "$_w" ] || die "no window bw-drag"
  eval "$(xdotool getwindowgeometry --shell "$_w")"
  cx=$((X + WIDTH / 2)); cy=$((Y + HEIGHT / 2)); _secs=$1
  # More moves than the time allows (each costs more than its 20 ms sleep); stopped after SECONDS.
  set -- $(awk -v s="$1" -v cx="$cx" -v cy="$cy" 'BEGIN {
    steps = s * 50; r = 150
    for (i = 1; i <= steps; i++) {
      a = 2 * 3.14159265 * i / 200
      printf "mousemove %d %d sleep 0.02 ", cx - r + r * cos(a), cy + r * sin(a)
    }
  }')
  xdotool mousemove "$cx" "$cy" keydown alt mousedown 1 "$@" &
  _p=$!
  sleep "$_secs"
  kill "$_p" 2>/dev/null; wait "$_p" 2>/dev/null
  xdotool mouseup 1 keyup alt
}

setup_photo() {
  start_app photo feh --title bw-photo --geometry 1024x683+128+60 "$W"/photos-"$SEED"/photo-*.jpg
  focus bw-photo
}
# A new photo every 3 s, the first at once.
run_photo() {
  _k=0
  while [ $((_k * 3)) -lt "$1" ]; do
    xdotool key Right
    _rem=$(($1 - _k * 3)); [ "$_rem" -gt 3 ] && _rem=3
    sleep "$_rem"; _k=$((_k + 1))
  done
}

setup_animation() { anim_frames "$SEED"; }
# Full screen at 25 frames/s for SECONDS, then paused on its last frame (feh's "h").
run_animation() {
  anim_frames "$SEED"
  start_app animation feh --title bw-anim -F -D 0.04 "$ANIM"/frame-*.jpg
  sleep "$1"
  _w=$(win bw-anim); [ -n "$_w" ] && xdotool windowactivate "$_w" key h 2>/dev/null
  return 0
}

setup_idle() { :; }
run_idle() { sleep "$1"; }

SEED=1
[ -s "$W/seed" ] && SEED=$(cat "$W/seed")
case $cmd in
  tools) cmd_tools ;;
  reset) cmd_reset ;;
  wait-desktop) cmd_wait_desktop ;;
  prepare) say "$1" > "$W/seed"; cmd_prepare "$1" ;;
  compositing) cmd_compositing "$1" ;;
  geometry) cmd_geometry ;;
  framebuffer) cmd_framebuffer ;;
  setup|run|teardown)
    kind=$1; shift
    case $kind in idle|typing|scroll|paging|drag|photo|animation) ;; *) die bad-kind ;; esac
    case $cmd in
      setup) "setup_$kind" ;;
      run) [ $# -ge 1 ] || die bad-seconds; case $1 in ''|*[!0-9]*) die bad-seconds ;; esac; "run_$kind" "$1" ;;
      teardown) close_app "$kind"; rm -f "$W/go" ;;
    esac ;;
  *) die unknown-command ;;
esac
`;
