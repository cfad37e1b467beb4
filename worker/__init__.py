"""The Celery worker side (installed as ``digitscan.worker``): bulk digit-scanning jobs
through Redis, classified with onnxruntime.

Never imports torch: ``pip install '.[worker]'`` brings onnxruntime, celery, redis and Pillow.

    settings     Settings, Limits, SubmitOptions: frozen, built at entry points, passed down
    app          ``celery -A digitscan.worker.app``: the only module that reads DIGITSCAN_*
    celeryapp    make_app(settings): the Celery app, and the start-up check of the model
    celeryconfig the Celery settings derived from Settings
    tasks        the thin task: per-process classifier and store, retries
    delivery     the at-least-once policy for one delivery (skip done, dead-letter)
    classify     one chunk of images to result lines
    imaging      safe decoding and MNIST-style normalisation of scans
    model        the onnxruntime classifier, pinned by its card
    messages     the job message format and its validation
    store        results and job bookkeeping in Redis, keyed by (job, item)
    inputs       files, folders, globs and archives to job items
    client       chunk, submit, wait, status line
    reconcile    re-send chunks that were lost
    results      the result line and the files it is written to
    embedded     a private Redis and local workers for ``digitscan scan``
    scan         ``digitscan scan``: the whole job on one machine
"""
