from . import main

if __name__ == "__main__":   # python -m cddfm3d.cli, as python -m cddfm3d
    raise SystemExit(main())
