import av, time, os, signal, threading
t0=time.monotonic()
threading.Timer(2, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    av.open("rtsp://127.0.0.1:18092/x", timeout=(10,5))
except BaseException as e:
    print(type(e), e, time.monotonic()-t0)
try:
    time.sleep(1); print("no pending KI")
except KeyboardInterrupt: print("KI delivered late")
