"""The Celery worker side: bulk digit-scanning jobs through Redis, classified with onnxruntime.

Never imports torch: ``pip install .[worker]`` brings onnxruntime, celery, redis and Pillow only.

    settings   WorkerSettings from the environment (one place)
    celeryconfig  the Celery settings derived from them
    app        the Celery app and its per-process model
    tasks      thin tasks over the plain functions below
    classify   one chunk of images to result lines (plain functions)
    imaging    safe decoding and MNIST-style normalisation of scans
    model      the onnxruntime classifier, pinned by its card
    messages   the job message format and its validation
    store      results in Redis, keyed by (job, item)
    inputs     files, folders, globs and archives to job items
    jobs       submit, wait, status, results, and the reconciler
    embedded   a private Redis and local workers for ``digitscan scan``
    scan       ``digitscan scan``: the whole job on one machine
    faults     test-only fault injection (inert unless DIGITSCAN_TEST_* is set)
"""
