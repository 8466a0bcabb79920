# The tutorial's TCP client, ported to Python 3: it connects, prints the
# welcome, sends three names in lock step printing each reply, then sends
# 'exit'.  Only the port (argv[1]) and a socket timeout are added.
import socket
import sys

port = int(sys.argv[1]) if len(sys.argv) > 1 else 9999
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(5)
# 建立连接:
s.connect(('127.0.0.1', port))
# 接收欢迎消息:
print(s.recv(1024).decode('utf-8'))
for data in [b'Michael', b'Tracy', b'Sarah']:
    # 发送数据:
    s.send(data)
    print(s.recv(1024).decode('utf-8'))
s.send(b'exit')
s.close()
