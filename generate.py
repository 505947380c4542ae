r"""Sample text from a trained TinyGPT checkpoint, streaming it to the terminal.

    python generate.py ckpt_path=outputs/.../last.ckpt prompt="To be" max_new_tokens=200 \
        decoder=nucleus decoder.top_p=0.9 seed=1
    python generate.py -m decoder=temperature decoder.temperature=0.5,1.0,1.5

The run itself is tinygpt.cli.generate (tests call its generate() in-process).
"""

from tinygpt.cli.generate import main

if __name__ == "__main__":
    main()
