# Sourced by the GPU stage scripts: install the carried wheels, point Pillow at the carried fribidi and fonts.
# The carry folder (.gpu, built by scripts/gpu_kit.py) holds whl/, lib/, fonts/ and real/ (the shared books).
KIT=${KIT:-.gpu}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$KIT"/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD LD_LIBRARY_PATH=$PWD/$KIT/lib:${LD_LIBRARY_PATH:-} OCR_ASSETS_FONT_DIRS=$PWD/$KIT/fonts
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
W=${W:-var/gpu}
NGPU=$(nvidia-smi -L | wc -l)
mkdir -p "$W"
