#!/usr/bin/env python3
"""Writes testdata/netns/node-a: a proc tree with one pod per hard case (see README.md).
Run from this directory; the tree is committed, this script documents how it was made."""
import os, shutil, struct

ROOT = "node-a"
HOST = 4026531840
H64 = "a678b512" * 8
HDR4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
HDR6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"

def hexaddr(ip):
    import ipaddress
    a = ipaddress.ip_address(ip)
    raw = a.packed
    return "".join("%08X" % struct.unpack("<I", raw[i:i+4])[0] for i in range(0, len(raw), 4))

def rows(v6, socks):
    out = HDR6 if v6 else HDR4
    rem = ("0" * 32 if v6 else "0" * 8) + ":0000"
    for i, (ip, port, st, ino) in enumerate(socks):
        out += "%4d: %s:%04X %s %02X 00000000:00000000 00:00000000 00000000     0        0 %d 1 0000000000000000 100 0 0 10 0\n" % (i, hexaddr(ip), port, rem, st, ino)
    return out

def proc(pid, cgroup, start, netns, tcp=None, tcp6=None, comm="pause", dirs=()):
    d = os.path.join(ROOT, str(pid))
    os.makedirs(os.path.join(d, "ns"))
    open(os.path.join(d, "cgroup"), "w").write(cgroup)
    open(os.path.join(d, "stat"), "w").write(
        "%d (%s) S 1 %d %d 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 %d 1000000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n" % (pid, comm, pid, pid, start))
    if netns:
        os.symlink("net:[%d]" % netns, os.path.join(d, "ns", "net"))
    os.makedirs(os.path.join(d, "net"), exist_ok=True)
    if tcp is not None:
        open(os.path.join(d, "net", "tcp"), "w").write(tcp)
    if tcp6 is not None:
        open(os.path.join(d, "net", "tcp6"), "w").write(tcp6)
    for x in dirs:  # a directory where a file should be: unreadable (.keep so git tracks it)
        os.makedirs(os.path.join(d, "net", x))
        open(os.path.join(d, "net", x, ".keep"), "w").close()

L = 0x0A
E = 0x01
shutil.rmtree(ROOT, ignore_errors=True)
proc(1, "12:pids:/\n1:name=systemd:/init.scope\n0::/init.scope\n", 1, HOST, comm="systemd")
proc(640, "0::/system.slice/sshd.service\n", 90, HOST, comm="sshd")
# Pod 1: CRI-O on cgroup v1 — pod only on v1 lines, 0:: points to crio.service; conmon is
# older, in the pod cgroup but the host netns; ztunnel listeners on [::] plus a SO_REUSEPORT
# twin (rolling restart) and DNS on [::1] and 127.0.0.1.
crio = "11:memory:/kubepods/burstable/poda2830d0d-b0f0-4ff0-81b5-0ee4e299cf80/crio-%s\n1:name=systemd:/kubepods/burstable/poda2830d0d-b0f0-4ff0-81b5-0ee4e299cf80/crio-%s\n0::/system.slice/crio.service\n" % (H64, H64)
proc(2100, "11:memory:/kubepods/burstable/poda2830d0d-b0f0-4ff0-81b5-0ee4e299cf80/crio-conmon-%s\n1:name=systemd:/kubepods/burstable/poda2830d0d-b0f0-4ff0-81b5-0ee4e299cf80/crio-conmon-%s\n0::/system.slice/crio.service\n" % (H64, H64), 200, HOST, comm="conmon")
proc(2101, crio, 201, 4026532101,
     tcp=rows(False, [("127.0.0.1", 15053, L, 9)]),
     tcp6=rows(True, [("::", 15001, L, 1), ("::", 15006, L, 2), ("::", 15008, L, 3), ("::1", 15053, L, 4), ("::", 15001, L, 5), ("::ffff:10.244.1.7", 15008, E, 6)]))
# Pod 2: containerd, systemd driver, cgroup v2, IPv4-only kernel: no tcp6 file, ztunnel on 0.0.0.0.
v2 = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod70565f42_b704_42f2_83fe_1ffb77a67800.slice/cri-containerd-%s.scope\n" % H64
proc(3100, v2, 300, 4026532102, tcp=rows(False, [("0.0.0.0", 15001, L, 1), ("0.0.0.0", 15006, L, 2), ("0.0.0.0", 15008, L, 3), ("127.0.0.1", 15053, L, 4), ("0.0.0.0", 8080, L, 5)]))
proc(3105, v2, 310, 4026532102, comm="app")
# Pod 3: kind nesting; 15008 flushed; the app's own 127.0.0.1:15008 does not count.
kind = "0::/system.slice/docker-%s.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod863b91d4_4b68_4efa_917f_4b560e3e86aa.slice/cri-containerd-%s.scope\n" % (H64, H64)
proc(4100, kind, 400, 4026532103, tcp=rows(False, [("127.0.0.1", 15008, L, 7)]), tcp6=rows(True, [("::", 15001, L, 1), ("::", 15006, L, 2)]))
# Pod 4: cgroupfs driver on a hybrid host: the classic orphan (only app sockets); a younger
# foreign process in the same cgroup but another netns has listeners and must not win.
cgfs = "12:pids:/\n4:memory:/\n1:name=systemd:/\n0::/kubepods/besteffort/podd0544205-72df-11e8-b691-080027c5d95e/84ad0790%s\n" % H64[8:]
proc(5100, cgfs, 500, 4026532104, tcp=rows(False, [("0.0.0.0", 8080, L, 1), ("10.244.1.9", 8080, E, 2)]), tcp6=rows(True, []))
proc(5200, cgfs, 900, 4026532999, tcp=rows(False, []), tcp6=rows(True, [("::", 15001, L, 1), ("::", 15006, L, 2), ("::", 15008, L, 3)]), comm="foreign")
# Pod 5: host network.
proc(6100, "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2c48913c_b29f_11e7_9350_020968147796.slice/cri-containerd-%s.scope\n" % H64, 600, HOST,
     tcp6=rows(True, [("::", 15001, L, 1), ("::", 15006, L, 2), ("::", 15008, L, 3)]))
# Pod 6: reader in a private cgroup namespace (relative path); both socket tables unreadable.
proc(7100, "0::/../../podd488cae9-b2a0-11e7-9350-020968147796/9bca8d63%s\n" % H64[8:], 700, 4026532106, dirs=("tcp", "tcp6"))
# Pod 7: garbage lines around valid rows.
proc(8100, "1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod11111111_2222_3333_4444_555555555555.slice/docker-%s.scope\n" % H64, 800, 4026532107,
     tcp="garbage\n" + rows(False, []),
     tcp6=rows(True, [("::", 15001, L, 1)]) + "   9: not a row\n\xff\xfe\n" + rows(True, [("::", 15006, L, 2), ("::", 15008, L, 3)]).split("\n", 1)[1])
# A process whose cgroup names two pods: a problem, attributed to neither.
proc(9100, "1:name=systemd:/kubepods/pod99999999-9999-9999-9999-999999999999/x\n0::/kubepods/pod88888888-8888-8888-8888-888888888888/y\n", 950, 4026532109)
