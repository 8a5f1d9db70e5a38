// Package rootless runs a command in network namespaces of its own, whose only way out is a
// TUN device that the calling process serves: `quicgate run -- CMD` tunnels an unmodified
// program without root.
//
// What it owns:
//
//   - the child (child.go): Start re-executes the running binary in a new user, network and
//     mount namespace. The user namespace maps the caller's uid and gid to themselves, and
//     the child keeps CAP_NET_ADMIN and CAP_SYS_ADMIN in it as ambient capabilities, so
//     it can bring lo up, create the TUN device (package tun: addresses, default routes for
//     IPv4 and IPv6) and bind-mount a resolv.conf over /etc/resolv.conf, while the command
//     later sees the caller's own uid, environment and working directory. The child sends
//     the device's descriptor to the parent over a socket pair (SCM_RIGHTS), waits for
//     the parent's go, drops its capabilities and execs the command in place: the command
//     keeps the child's PID, so the parent waits for the command itself.
//   - the parent's side (run.go): Start, which returns once the descriptor is here (the
//     caller serves it, with tun.FromFD and the TUN ingress, from the host's namespace,
//     where its QUIC socket is); Proc.Exec, which lets the command run; Proc.Wait, which
//     passes signals on and returns the command's exit status as a shell reports it.
//   - the lifecycle (lifecycle.go, signals.go, exit.go): Run, the whole of `quicgate run`
//     for any program that embeds it. It finds the command, takes the signals, and calls a
//     serve function (the tunnel) with a Session: Session.Start makes the namespace and
//     returns its device, Session.Exec lets the command run once the tunnel is up, and the
//     command's exit ends serve's context. A signal before the command starts stops the
//     setup; after, it is passed on; a tunnel that fails under the command ends it (SIGTERM,
//     then SIGKILL after TermGrace). Run returns the command's end as an *ExitError (its
//     status, the signal that ended it, or why it could not run), which DieBySignal lets
//     the caller mirror as sudo does.
//   - the refusals (errors.go): where user namespaces are disabled (user.max_user_namespaces,
//     kernel.unprivileged_userns_clone, AppArmor's restriction) or /dev/net/tun is closed
//     to the user, an error matching ErrUserNamespaces or ErrTUNAccess whose text names the
//     setting and how to change it.
//
// The namespaces end with the last process in them and the parent's descriptor: when the
// command exits and the parent closes the device, its routes and flows go with it.
package rootless
