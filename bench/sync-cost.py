#!/usr/bin/env python3
# What making an upload durable costs (the sixteenth session, BENCHMARKS.md):
# 2,000 files of 64 KiB, each created, written with O_DIRECT and renamed
# beside its address, made durable either one by one ("each": fsync of
# the file, then of its folder) or ten at a time ("syncfs": one syncfs of
# the file system), as the relay's `[blob_store] sync = "upload"` and
# `"batch"` do. Prints wall and CPU time (user + system) per file.
#
#   bench/sync-cost.py DIR each syncfs each syncfs
#
# DIR is created and removed; it must be on the file system to measure.
import os, ctypes, time, mmap, sys, resource
libc=ctypes.CDLL("libc.so.6", use_errno=True)
root=sys.argv[1]
os.makedirs(root, exist_ok=True)
buf=mmap.mmap(-1, 65536); buf.write(os.urandom(65536))
def ru():
    r=resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime+r.ru_stime
def run(mode, n=2000, batch=10):
    t0=time.time(); c0=ru()
    rootfd=os.open(root, os.O_RDONLY)
    for b in range(0, n, batch):
        for i in range(b, b+batch):
            d=os.path.join(root, '%02x'%(i%256)); os.makedirs(d, exist_ok=True)
            tmp=os.path.join(d, f'{mode}{i}.upload'); dst=os.path.join(d, f'{mode}{i}')
            fd=os.open(tmp, os.O_WRONLY|os.O_CREAT|os.O_DIRECT, 0o600)
            os.write(fd, buf)
            if mode=='each': os.fsync(fd)
            os.close(fd)
            os.rename(tmp, dst)
            if mode=='each':
                dfd=os.open(d, os.O_RDONLY); os.fsync(dfd); os.close(dfd)
        if mode=='syncfs':
            assert libc.syncfs(rootfd)==0
    os.close(rootfd)
    dt=time.time()-t0; dc=ru()-c0
    print(mode, f"wall {dt/n*1e3:.3f} ms/file, cpu {dc/n*1e3:.3f} ms/file")
try:
    for m in sys.argv[2:]:
        run(m)
finally:
    import shutil
    shutil.rmtree(root)
