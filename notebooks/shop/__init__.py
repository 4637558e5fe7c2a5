"""The shop's back-office code that the lessons import: the tasks of the running story.

A lesson defines most of its tasks in its own cells. These live in files instead, for two
reasons: a worker started as another process (`python -m sitq worker URL --import
shop.reliability`, lessons 14 and 15) has to import the task functions by name, and a
lesson that replays another one's workload (lesson 13 replays lesson 12's four minutes of
traffic) should run the very same code. The lessons run with this folder's parent as their
current directory, so `import shop.scaling` works there, and the worker processes they
start get that directory on their PYTHONPATH.

- `shop.reliability`: charges and thumbnails that note every run (lesson 14);
- `shop.scaling`: one tiny task that notes which process ran it (lesson 15);
- `shop.traffic`: four minutes of failing orders, emails and images (lessons 12 and 13).
"""
